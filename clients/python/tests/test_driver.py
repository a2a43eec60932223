"""Bay's driver contract, through the Python client, against a real Berth
and a real control plane."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pytest

from berth_client import (BerthDriver, DeniedByPolicy, InvalidRequest, MultiContainerInfo, NotFound, StartFailed,
                          Unauthorized)


# Plain objects with Bay's attribute names, as Bay's SQLModel rows have them.
@dataclass
class Resources:
    cpus: float = 1.0
    memory: str = "1g"


@dataclass
class Container:
    name: str
    image: str
    runtime_type: str = "ship"
    runtime_port: int = 8123
    resources: Optional[Resources] = None
    capabilities: list = field(default_factory=list)
    env: dict = field(default_factory=dict)


@dataclass
class Profile:
    id: str = "python"
    image: Optional[str] = "ghcr.io/example/ship:1.0"
    runtime_type: str = "ship"
    runtime_port: int = 8123
    resources: Optional[Resources] = field(default_factory=Resources)
    capabilities: list = field(default_factory=lambda: ["shell"])
    env: dict = field(default_factory=lambda: {"LANG": "C.UTF-8"})
    containers: list = field(default_factory=list)


@dataclass
class Session:
    id: str
    sandbox_id: str


@dataclass
class Cargo:
    id: str
    driver_ref: str
    size_limit_mb: int = 1024


def ids():
    s = "py-" + uuid.uuid4().hex[:10]
    return Session(s, "sbx-" + s), Cargo("c-" + s, "cargo-" + s)


LABELS = {"bay.owner": "alice", "bay.instance_id": "py-bay"}


async def test_full_session_life(driver: BerthDriver):
    session, cargo = ids()
    assert await driver.create_volume(cargo.driver_ref, {"bay.cargo_id": cargo.id}) == cargo.driver_ref
    assert await driver.volume_exists(cargo.driver_ref)
    cid = await driver.create(session, Profile(), cargo, LABELS)
    assert cid == f"bay-session-{session.id}"
    assert await driver.create(session, Profile(), cargo, LABELS) == cid  # idempotent
    endpoint = await driver.start(cid, 8123)
    assert endpoint.startswith("http://127.1.") and endpoint.endswith(":8123")
    info = await driver.status(cid, runtime_port=8123)
    assert info.status == "running" and info.endpoint == endpoint
    assert (await driver.logs(cid, tail=1)) == "berth-test log line 5\n"
    await driver.stop(cid)
    await driver.destroy(cid)
    assert (await driver.status(cid)).status == "not_found"
    assert await driver.logs(cid) == ""
    await driver.delete_volume(cargo.driver_ref)
    await driver.delete_volume(cargo.driver_ref)  # missing is success
    assert await driver.create_session_network(session.id) == f"session-{session.id}"
    await driver.remove_session_network(f"session-{session.id}")


async def test_sidecar_session(driver: BerthDriver):
    session, cargo = ids()
    await driver.create_volume(cargo.driver_ref)
    profile = Profile(id="browser", image=None, containers=[
        Container("ship", "ghcr.io/example/ship:1.0", resources=Resources()),
        Container("browser", "ghcr.io/example/gull:1.0", runtime_type="browser", runtime_port=8124),
    ])
    infos = await driver.create_multi(session, profile, cargo, "net", LABELS)
    assert [i.name for i in infos] == ["ship", "browser"]
    assert all(isinstance(i, MultiContainerInfo) and i.status == "created" for i in infos)
    started = await driver.start_multi(infos)
    assert started[0].endpoint.endswith(":8123") and started[1].endpoint.endswith(":8124")
    assert started[0].endpoint.rsplit(":", 1)[0] == started[1].endpoint.rsplit(":", 1)[0]
    status = await driver.status(infos[0].container_id)
    assert [c.name for c in status.containers] == ["ship", "browser"]
    await driver.destroy_multi(started)
    assert (await driver.status(infos[0].container_id)).status == "not_found"
    await driver.delete_volume(cargo.driver_ref)


async def test_gc_listing(driver: BerthDriver):
    instance = "py-gc-" + uuid.uuid4().hex[:8]
    made = []
    for _ in range(2):
        session, cargo = ids()
        await driver.create_volume(cargo.driver_ref)
        made.append(await driver.create(session, Profile(), cargo, {"bay.instance_id": instance}))
    found = await driver.list_runtime_instances({"bay.managed": "true", "bay.instance_id": instance})
    assert sorted(i.id for i in found) == sorted(made)
    assert all(i.labels["bay.instance_id"] == instance for i in found)
    for i in found:
        await driver.destroy_runtime_instance(i.id)
    await driver.destroy_runtime_instance(made[0])  # missing is success
    with pytest.raises(InvalidRequest):
        await driver.list_runtime_instances({"bay.owner": "alice@example.com"})


async def test_policy_denial_is_an_exception(driver: BerthDriver):
    session, cargo = ids()
    await driver.create_volume(cargo.driver_ref)
    with pytest.raises(DeniedByPolicy) as e:
        await driver.create(session, Profile(resources=Resources(cpus=16)), cargo, LABELS)
    assert e.value.plugin == "resources"
    assert "above the maximum 4" in e.value.detail
    assert (await driver.status(f"bay-session-{session.id}")).status == "not_found"
    await driver.delete_volume(cargo.driver_ref)


async def test_errors_by_kind(driver: BerthDriver, berth_url):
    with pytest.raises(NotFound):
        await driver.start("bay-session-does-not-exist", 8123)
    session, cargo = ids()
    with pytest.raises(InvalidRequest):
        await driver.create(Session("Bad_ID", "x"), Profile(), cargo)
    bad = BerthDriver.from_settings(berth_url, "not-the-token-at-all")
    with pytest.raises(Unauthorized):
        await bad.status("bay-session-x")
    await bad.close()
    assert issubclass(StartFailed, Exception)


async def test_twenty_concurrent_session_starts(driver: BerthDriver):
    pairs = [ids() for _ in range(20)]

    async def one(session, cargo):
        await driver.create_volume(cargo.driver_ref)
        cid = await driver.create(session, Profile(), cargo, LABELS)
        return cid, await driver.start(cid, 8123)

    results = await asyncio.gather(*(one(s, c) for s, c in pairs))
    assert len({cid for cid, _ in results}) == 20
    assert all(ep.startswith("http://127.1.") for _, ep in results)
    await asyncio.gather(*(driver.destroy(cid) for cid, _ in results))
    await asyncio.gather(*(driver.delete_volume(c.driver_ref) for _, c in pairs))
