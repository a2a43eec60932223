"""Plays Bay: objects shaped exactly like Bay's (written from Berth's copy of
Bay's driver contract, `shared/design/bay-driver-contract.md`, section "What
Bay does with what the driver returns"), driving every driver method in the
order Bay's managers do, with Bay's keyword arguments, against a real Berth
and the real control plane. Bay's health checks are real HTTP requests to the
endpoints `start` returns."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

import httpx
import pytest

from berth_client import BerthDriver, Conflict, InvalidRequest, Timeout

from conftest import NAMESPACE, TOKEN


# --- Bay's shapes ---------------------------------------------------------------
class ContainerStatus(str, Enum):  # Bay's own enum: a different class from the client's
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    REMOVING = "removing"
    NOT_FOUND = "not_found"


BAY_DEFAULT_NO_PROXY = ("localhost,127.0.0.1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,"
                        "*.local,.svc,.svc.cluster.local,.pod.cluster.local")


@dataclass
class ProxyConfig:
    enabled: bool = False
    http_proxy: Optional[str] = None
    https_proxy: Optional[str] = None
    no_proxy: Optional[str] = None
    default_no_proxy: str = BAY_DEFAULT_NO_PROXY


@dataclass
class ResourceSpec:
    cpus: float = 1.0
    memory: str = "1g"


@dataclass
class ContainerSpec:
    name: str
    image: str
    runtime_type: str = "ship"
    runtime_port: int = 8123
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    capabilities: list = field(default_factory=list)
    primary_for: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    proxy: Optional[ProxyConfig] = None
    health_check_path: str = "/health"


@dataclass
class ProfileConfig:
    """Bay normalises a single-image profile to one container named
    `primary`, and keeps the legacy fields as given."""

    id: str
    image: Optional[str] = None
    runtime_type: Optional[str] = None
    resources: Optional[ResourceSpec] = None
    capabilities: Optional[list] = None
    runtime_port: Optional[int] = None
    env: Optional[dict] = None
    proxy: Optional[ProxyConfig] = None
    containers: Optional[list] = None

    def __post_init__(self) -> None:
        if self.containers is None and self.image:
            caps = self.capabilities or ["filesystem", "shell", "python"]
            self.containers = [ContainerSpec(
                name="primary", image=self.image, runtime_type=self.runtime_type or "ship",
                runtime_port=self.runtime_port or 8123, resources=self.resources or ResourceSpec(),
                capabilities=caps, primary_for=caps, env=self.env or {})]

    def get_containers(self) -> list:
        return self.containers or []

    def get_primary_container(self):
        for c in self.get_containers():
            if c.name in ("primary", "ship"):
                return c
        return self.get_containers()[0]


@dataclass
class Session:
    id: str
    sandbox_id: str


@dataclass
class Cargo:
    id: str
    owner: str
    driver_ref: str = ""
    size_limit_mb: int = 1024
    managed: bool = True


@dataclass
class MultiContainerInfo:  # Bay's, rebuilt from its database
    name: str
    container_id: str
    endpoint: Optional[str] = None
    status: ContainerStatus = ContainerStatus.CREATED
    runtime_type: str = "ship"
    capabilities: list = field(default_factory=list)


# --- Bay's managers, reduced to the driver calls they make ------------------------
def new_ids(owner: str = "default") -> tuple[Session, Cargo]:
    h = uuid.uuid4().hex[:12]
    return Session(f"sess-{h}", f"sandbox-{h}"), Cargo(f"ws-{h}", owner)


async def create_cargo(driver, cargo: Cargo) -> None:
    """CargoManager.create: the volume first, with Bay's labels and no size."""
    cargo.driver_ref = await driver.create_volume(
        name=f"bay-cargo-{cargo.id}",
        labels={"bay.owner": cargo.owner, "bay.cargo_id": cargo.id, "bay.managed": "true"})


async def healthy(endpoint: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as c:
        return (await c.get(f"{endpoint.rstrip('/')}/health")).status_code == 200


async def ensure_running_single(driver, session: Session, profile: ProfileConfig, cargo: Cargo) -> str:
    """SessionManager: create, start, then Bay's own health check; on any
    failure Bay destroys what it created."""
    cid = await driver.create(session=session, profile=profile, cargo=cargo)
    try:
        primary = profile.get_primary_container()
        endpoint = await driver.start(cid, runtime_port=primary.runtime_port or 8123)
        assert await healthy(endpoint)
        return cid
    except BaseException:
        await driver.destroy(cid)
        raise


def bay_driver(url: str, instance_id: str, **kw) -> BerthDriver:
    return BerthDriver.from_settings(url, TOKEN, instance_id=instance_id, **kw)


# --- the tests ----------------------------------------------------------------
async def test_single_session_as_bay_drives_it(berth_url, runtime_ports, kube):
    port = runtime_ports[0]
    driver = bay_driver(berth_url, "bay-conf-" + uuid.uuid4().hex[:6])
    session, cargo = new_ids(owner="alice")
    profile = ProfileConfig(id="python-default", image="ship:latest", runtime_port=port,
                            resources=ResourceSpec(1.0, "512m"), env={"LANG": "C.UTF-8"})
    await create_cargo(driver, cargo)
    assert cargo.driver_ref == f"bay-cargo-{cargo.id}" and await driver.volume_exists(cargo.driver_ref)

    cid = await ensure_running_single(driver, session, profile, cargo)
    assert cid == f"bay-session-{session.id}"
    info = await driver.status(cid, runtime_port=port)
    # Bay compares with its own enum and reads .value.
    assert info.status == ContainerStatus.RUNNING and info.status.value == "running"
    assert info.endpoint and await healthy(info.endpoint)

    pod = kube.pod(cid)
    labels = pod["metadata"]["labels"]
    assert labels["bay.owner"] == "alice" and labels["bay.instance_id"] == driver.instance_id
    assert labels["bay.runtime_port"] == str(port)
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "ship"  # Bay's driver name, not Bay's normalised "primary"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LANG"] == "C.UTF-8" and env["BAY_SESSION_ID"] == session.id
    assert env["BAY_WORKSPACE_PATH"] == "/workspace" and "HTTP_PROXY" not in env

    # Session stop: stop returns once the Pod is gone, so a restart cannot
    # race the old Pod for the cargo.
    await driver.stop(cid)
    assert kube.pod(cid) is None
    assert (await driver.status(cid)).status == ContainerStatus.NOT_FOUND
    cid = await ensure_running_single(driver, session, profile, cargo)

    # Sandbox delete: destroy, then the managed cargo.
    await driver.destroy(cid)
    assert (await driver.status(cid)).status.value == "not_found"
    await driver.delete_volume(cargo.driver_ref)
    # The claim goes once the controller-manager lifts its PVC protection.
    for _ in range(100):
        if not await driver.volume_exists(cargo.driver_ref):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"{cargo.driver_ref} still exists 10 s after delete_volume")
    await driver.close()


async def test_multi_container_session_as_bay_drives_it(berth_url, runtime_ports, kube):
    ship_port, gull_port = runtime_ports
    driver = bay_driver(berth_url, "bay-conf-" + uuid.uuid4().hex[:6])
    session, cargo = new_ids()
    # The browser first: Bay's primary is the container named ship anyway.
    profile = ProfileConfig(id="browser-python", containers=[
        ContainerSpec("browser", "gull:latest", runtime_type="gull", runtime_port=gull_port,
                      resources=ResourceSpec(1.0, "1g"), capabilities=["browser"], primary_for=["browser"]),
        ContainerSpec("ship", "ship:latest", runtime_port=ship_port, capabilities=["shell", "python"],
                      primary_for=["shell", "python"]),
    ])
    await create_cargo(driver, cargo)
    network = await driver.create_session_network(session.id)
    infos = await driver.create_multi(session=session, profile=profile, cargo=cargo, network_name=network)
    assert [i.name for i in infos] == ["ship", "browser"]
    infos = await driver.start_multi(infos)
    stored = [i.to_dict() for i in infos]  # what Bay keeps in session.containers
    assert [d["status"] for d in stored] == ["running", "running"]
    assert all(await asyncio.gather(*(healthy(i.endpoint) for i in infos)))
    assert {i.name: i.endpoint.rsplit(":", 1)[1] for i in infos} == {"ship": str(ship_port),
                                                                      "browser": str(gull_port)}
    pod = kube.pod(infos[0].container_id)
    assert pod["metadata"]["labels"]["bay.runtime_port"] == str(ship_port)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ship", "browser"]

    def rebuilt() -> list[MultiContainerInfo]:  # SessionManager.stop/destroy
        return [MultiContainerInfo(name=d["name"], container_id=d["container_id"],
                                   runtime_type=d.get("runtime_type", "ship"),
                                   capabilities=d.get("capabilities", [])) for d in stored]

    await driver.stop_multi(rebuilt())
    await driver.remove_session_network(network)
    assert kube.pod(infos[0].container_id) is None

    # Started again from Bay's rebuilt records, which carry no ports.
    again = await driver.create_multi(session=session, profile=profile, cargo=cargo, network_name=network)
    again = await driver.start_multi(rebuilt())
    assert [i.endpoint.rsplit(":", 1)[1] for i in again] == [str(ship_port), str(gull_port)]
    await driver.destroy_multi(rebuilt())
    assert (await driver.status(infos[0].container_id)).status == ContainerStatus.NOT_FOUND
    await driver.delete_volume(cargo.driver_ref)
    await driver.close()


async def test_orphan_gc_finds_exactly_its_instances(berth_url):
    ours, theirs = "bay-gc-" + uuid.uuid4().hex[:6], "bay-other-" + uuid.uuid4().hex[:6]
    a, b = bay_driver(berth_url, ours), bay_driver(berth_url, theirs)
    made = {}
    for d in (a, a, b):
        session, cargo = new_ids()
        await create_cargo(d, cargo)
        made[await d.create(session=session, profile=ProfileConfig(id="python-default", image="ship:latest"),
                            cargo=cargo)] = cargo
    found = await a.list_runtime_instances(labels={"bay.managed": "true", "bay.instance_id": ours})
    assert len(found) == 2
    for inst in found:  # Bay's orphan-container GC's checks
        assert inst.name.startswith("bay-")
        for k in ("bay.session_id", "bay.sandbox_id", "bay.cargo_id", "bay.instance_id", "bay.managed"):
            assert k in inst.labels
        assert inst.labels["bay.instance_id"] == ours and inst.state in ("pending", "running")
        await a.destroy_runtime_instance(inst.id)
    # The cargo GC sees what still uses a cargo.
    left = [cid for cid in made if cid not in {i.id for i in found}]
    (other,) = left
    using = await b.list_runtime_instances(labels={"bay.cargo_id": made[other].id, "bay.managed": "true"})
    assert [i.id for i in using] == [other]
    await b.destroy(other)
    for cargo in made.values():
        await a.delete_volume(cargo.driver_ref)
    await a.close()
    await b.close()


async def test_owner_that_is_no_label_value_is_refused_by_name(berth_url):
    driver = bay_driver(berth_url, "bay-conf")
    session, cargo = new_ids(owner="alice@example.com")
    cargo.driver_ref = "bay-cargo-" + cargo.id
    with pytest.raises(InvalidRequest) as e:
        await driver.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    assert "session.owner" in e.value.detail and "alice@example.com" in e.value.detail
    await driver.close()


async def test_a_dead_runtime_reads_as_exited_and_bay_recovers(berth_url, runtime_ports, kube):
    driver = bay_driver(berth_url, "bay-conf")
    session, cargo = new_ids()
    profile = ProfileConfig(id="python-default", image="ship:latest", runtime_port=runtime_ports[0])
    await create_cargo(driver, cargo)
    cid = await ensure_running_single(driver, session, profile, cargo)
    # Play kubelet: the runtime died.
    kube.patch_pod(cid, {"status": {"phase": "Failed", "containerStatuses": [{
        "name": "ship", "image": "ship:latest", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}, status=True)
    info = await driver.status(cid, runtime_port=runtime_ports[0])
    # SessionManager's probe and the warm-pool scheduler read .status.value.
    assert info.status != ContainerStatus.RUNNING and info.status.value == "exited"
    assert info.exit_code == 137 and info.endpoint is None
    await driver.destroy(cid)  # Bay's recovery, then a fresh start
    cid = await ensure_running_single(driver, session, profile, cargo)
    await driver.destroy(cid)
    await driver.delete_volume(cargo.driver_ref)
    await driver.close()


async def test_a_start_that_cannot_finish_times_out_once_and_says_why(short_berth_url):
    driver = bay_driver(short_berth_url, "bay-conf")
    session, cargo = new_ids()
    await create_cargo(driver, cargo)  # its claim never binds
    cid = await driver.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    began = time.monotonic()
    with pytest.raises(Timeout) as e:
        await driver.start(cid, runtime_port=8123)
    took = time.monotonic() - began
    # One server-side wait of 3 s, not one per retry.
    assert took < 8, f"start took {took:.1f}s for a 3 s timeout"
    assert e.value.status == 504
    assert "not running after 3s" in e.value.detail and "PersistentVolumeClaim" in e.value.detail
    await driver.destroy(cid)
    await driver.delete_volume(cargo.driver_ref)
    await driver.close()


async def test_a_destroy_held_by_a_finalizer_warns_like_bay_or_raises(short_berth_url, kube, caplog):
    session, cargo = new_ids()
    warn = bay_driver(short_berth_url, "bay-conf")
    strict = bay_driver(short_berth_url, "bay-conf", destroy_timeout="raise")
    await create_cargo(warn, cargo)
    cid = await warn.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    kube.patch_pod(cid, {"metadata": {"finalizers": ["berth.test/hold"]}})
    try:
        with caplog.at_level(logging.WARNING, logger="berth_client"):
            began = time.monotonic()
            await warn.destroy(cid)
            assert time.monotonic() - began < 8
        assert "berth.test/hold" in caplog.text
        with pytest.raises(Timeout) as e:
            await strict.destroy(cid)
        assert e.value.status == 504 and "held by finalizers berth.test/hold" in e.value.detail
        # A name being deleted cannot be created again yet.
        with pytest.raises(Conflict):
            await warn.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    finally:
        kube.patch_pod(cid, {"metadata": {"finalizers": None}})
    await strict.destroy(cid)
    assert kube.pod(cid) is None
    await warn.delete_volume(cargo.driver_ref)
    await warn.close()
    await strict.close()


def _env(pod: dict, container: str) -> dict:
    (c,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e["value"] for e in c.get("env", [])}


async def test_proxy_resolves_container_then_profile_then_global(berth_url, kube):
    glob = ProxyConfig(enabled=True, http_proxy="http://proxy.corp:3128", https_proxy="http://proxy.corp:3129",
                       no_proxy=".corp.internal")
    driver = bay_driver(berth_url, "bay-conf", global_proxy=glob)
    session, cargo = new_ids()
    await create_cargo(driver, cargo)
    profile = ProfileConfig(id="browser-python", containers=[
        ContainerSpec("ship", "ship:latest"),
        ContainerSpec("browser", "gull:latest", runtime_type="gull", runtime_port=8115,
                      proxy=ProxyConfig(enabled=False)),
    ])
    infos = await driver.create_multi(session=session, profile=profile, cargo=cargo, network_name="n")
    pod = kube.pod(infos[0].container_id)
    ship = _env(pod, "ship")
    assert ship["HTTP_PROXY"] == ship["http_proxy"] == "http://proxy.corp:3128"
    assert ship["HTTPS_PROXY"] == ship["https_proxy"] == "http://proxy.corp:3129"
    assert ship["NO_PROXY"] == ship["no_proxy"] == BAY_DEFAULT_NO_PROXY + ",.corp.internal"
    browser = _env(pod, "browser")
    assert not {"HTTP_PROXY", "http_proxy", "NO_PROXY"} & browser.keys()  # explicitly disabled
    assert browser["BAY_CONTAINER_NAME"] == "browser"
    await driver.destroy_multi(infos)

    # A profile's own proxy wins over the global one, whole.
    session2, _ = new_ids()
    own = ProfileConfig(id="python-default", image="ship:latest",
                        proxy=ProxyConfig(enabled=True, https_proxy="http://egress:8080"))
    cid = await driver.create(session=session2, profile=own, cargo=cargo)
    env = _env(kube.pod(cid), "ship")
    assert env["HTTPS_PROXY"] == "http://egress:8080" and "HTTP_PROXY" not in env
    assert env["NO_PROXY"] == BAY_DEFAULT_NO_PROXY
    await driver.destroy(cid)
    await driver.delete_volume(cargo.driver_ref)
    await driver.close()


async def test_cargo_size_reaches_the_claim(berth_url, short_berth_url, kube, caplog):
    driver = bay_driver(berth_url, "bay-conf", default_size_limit_mb=1024)
    session, cargo = new_ids()
    cargo.size_limit_mb = 4096
    await create_cargo(driver, cargo)
    claim = kube.pvc(cargo.driver_ref)
    # Bay's create_volume has no size: the claim gets Bay's default cargo size.
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"  # the resources plugin writes sizes canonically
    cid = await driver.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    assert kube.pvc(cargo.driver_ref)["spec"]["resources"]["requests"]["storage"] == "4Gi"
    await driver.destroy(cid)
    await driver.delete_volume(cargo.driver_ref)
    await driver.close()

    # A claim that does not bind (here: its StorageClass does not exist)
    # cannot be expanded; the session is still created and the reason logged.
    short = bay_driver(short_berth_url, "bay-conf")
    session, cargo = new_ids()
    cargo.size_limit_mb = 4096
    await create_cargo(short, cargo)
    with caplog.at_level(logging.WARNING, logger="berth_client"):
        cid = await short.create(session=session, profile=ProfileConfig(id="p", image="ship:latest"), cargo=cargo)
    assert "is not bound yet, so it keeps its size" in caplog.text
    await short.destroy(cid)
    await short.delete_volume(cargo.driver_ref)
    await short.close()
