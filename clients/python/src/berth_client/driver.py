"""A Bay driver backed by Berth: Bay's method names, keyword arguments and
return types. Accepts Bay's Session/ProfileConfig/Cargo objects, or any
objects (or dicts) with the same attributes.

What Bay's own Kubernetes driver takes from Bay's settings, this driver is
given once: `instance_id` (Bay's `settings.gc.get_instance_id()`),
`global_proxy` (Bay's `settings.proxy`) and `default_size_limit_mb` (Bay's
`settings.cargo.default_size_limit_mb`). `berth_client.bay` reads them from
Bay's settings for you."""

from __future__ import annotations

import logging
from typing import Any, Literal, Optional

from . import errors
from .client import BerthClient, _get
from .models import ContainerInfo, MultiContainerInfo, RuntimeInstance

log = logging.getLogger("berth_client")

# The container name Bay's Kubernetes driver gives a single-container session.
SINGLE_CONTAINER_NAME = "ship"


def _resources(r: Any) -> Optional[dict[str, Any]]:
    if r is None:
        return None
    out: dict[str, Any] = {}
    cpus = _get(r, "cpus")
    memory = _get(r, "memory")
    if cpus is not None:
        out["cpus"] = float(cpus)
    if memory is not None:
        out["memory"] = str(memory)
    return out


def proxy_body(p: Any) -> Optional[dict[str, Any]]:
    """Bay's `ProxyConfig` as Berth reads it (same field names)."""
    if p is None:
        return None
    body: dict[str, Any] = {"enabled": bool(_get(p, "enabled", False))}
    for k in ("http_proxy", "https_proxy", "no_proxy", "default_no_proxy"):
        v = _get(p, k)
        if v is not None:
            body[k] = str(v)
    return body


def _container(c: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": _get(c, "name"),
        "image": _get(c, "image"),
        "runtime_type": str(_get(c, "runtime_type", "ship") or "ship"),
        "runtime_port": int(_get(c, "runtime_port", 8123) or 8123),
        "capabilities": list(_get(c, "capabilities", []) or []),
        "primary_for": list(_get(c, "primary_for", []) or []),
        "env": {str(k): str(v) for k, v in (_get(c, "env", {}) or {}).items()},
    }
    if _get(c, "resources") is not None:
        spec["resources"] = _resources(_get(c, "resources"))
    if _get(c, "health_check_path"):
        spec["health_check_path"] = str(_get(c, "health_check_path"))
    if _get(c, "proxy") is not None:
        spec["proxy"] = proxy_body(_get(c, "proxy"))
    return spec


def _containers(profile: Any) -> list[Any]:
    getter = _get(profile, "get_containers")
    if callable(getter):
        return list(getter() or [])
    return list(_get(profile, "containers") or [])


def primary_container(containers: list[Any]) -> Any:
    """Bay's rule: the first container named `primary` or `ship`, else the
    first."""
    for c in containers:
        if _get(c, "name") in ("primary", "ship"):
            return c
    return containers[0]


def profile_body(profile: Any, global_proxy: Any = None, *, single: bool = False) -> dict[str, Any]:
    """Bay's profile as Berth reads it. `single`: the session runs one
    container, which Bay's Kubernetes driver names `ship` (Bay normalises a
    single-image profile to one container named `primary`)."""
    body: dict[str, Any] = {"id": _get(profile, "id")}
    containers = _containers(profile)
    if containers:
        if single:
            one = _container(primary_container(containers))
            one["name"] = SINGLE_CONTAINER_NAME
            body["containers"] = [one]
        else:
            body["containers"] = [_container(c) for c in containers]
    else:
        body["image"] = _get(profile, "image")
        body["runtime_type"] = str(_get(profile, "runtime_type", "ship") or "ship")
        body["runtime_port"] = int(_get(profile, "runtime_port", 8123) or 8123)
        body["capabilities"] = list(_get(profile, "capabilities", []) or [])
        if _get(profile, "resources") is not None:
            body["resources"] = _resources(_get(profile, "resources"))
    body["env"] = {str(k): str(v) for k, v in (_get(profile, "env", {}) or {}).items()}
    # Bay resolves container > profile > global and uses the winner whole:
    # the global proxy stands in for a profile that has none.
    proxy = _get(profile, "proxy") or global_proxy
    if proxy is not None:
        body["proxy"] = proxy_body(proxy)
    return body


class BerthDriver:
    """Drop-in for Bay's Kubernetes driver.

    `destroy_timeout`: what `stop`/`destroy` do when Berth answers that the
    Pod is still there after its destroy timeout (e.g. held by a finalizer).
    Bay's own Kubernetes driver logs a warning and carries on, and Bay's
    managers are written for that: `"warn"` (the default) does the same,
    logging Berth's message (which names what holds the Pod). The deletion
    stays requested, so Kubernetes removes the Pod once the hold clears, and
    the cargo's PVC protection keeps the volume until then. `"raise"` raises
    `Timeout` instead."""

    def __init__(self, client: BerthClient, *, instance_id: Optional[str] = None, global_proxy: Any = None,
                 default_size_limit_mb: Optional[int] = None,
                 destroy_timeout: Literal["warn", "raise"] = "warn") -> None:
        if destroy_timeout not in ("warn", "raise"):
            raise ValueError("destroy_timeout must be 'warn' or 'raise'")
        self.client = client
        self.instance_id = instance_id
        self.global_proxy = global_proxy
        self.default_size_limit_mb = default_size_limit_mb
        self.destroy_timeout = destroy_timeout

    @classmethod
    def from_settings(cls, url: str, token: str, *, instance_id: Optional[str] = None, global_proxy: Any = None,
                      default_size_limit_mb: Optional[int] = None,
                      destroy_timeout: Literal["warn", "raise"] = "warn", **client_kwargs: Any) -> "BerthDriver":
        return cls(BerthClient(url, token, **client_kwargs), instance_id=instance_id, global_proxy=global_proxy,
                   default_size_limit_mb=default_size_limit_mb, destroy_timeout=destroy_timeout)

    async def close(self) -> None:
        await self.client.aclose()

    def _request(self, session: Any, profile: Any, cargo: Any, labels: Optional[dict[str, str]], *,
                 single: bool) -> dict[str, Any]:
        sess: dict[str, Any] = {"id": _get(session, "id"), "sandbox_id": _get(session, "sandbox_id")}
        # Bay keeps the owner on the sandbox and on its cargo; the session
        # row does not carry it.
        owner = _get(session, "owner") or _get(cargo, "owner")
        if owner:
            sess["owner"] = str(owner)
        body: dict[str, Any] = {
            "session": sess,
            "profile": profile_body(profile, self.global_proxy, single=single),
            "cargo": {
                "id": _get(cargo, "id"),
                "driver_ref": _get(cargo, "driver_ref"),
                "size_limit_mb": int(_get(cargo, "size_limit_mb", None) or self.default_size_limit_mb or 1024),
            },
            "labels": dict(labels or {}),
        }
        if self.instance_id:
            body["instance_id"] = self.instance_id
        return body

    async def _waited(self, what: str, call: Any) -> None:
        try:
            await call
        except errors.Timeout as e:
            if self.destroy_timeout == "raise":
                raise
            log.warning("berth: %s did not finish in time; Kubernetes will finish it: %s", what, e.detail)

    # sessions
    async def create(self, session: Any, profile: Any, cargo: Any, labels: Optional[dict[str, str]] = None) -> str:
        body = self._request(session, profile, cargo, labels, single=len(_containers(profile)) <= 1)
        created = await self.client.create_session(body)
        for w in created.warnings:
            log.warning("berth: %s", w)
        return created.container_id

    async def start(self, container_id: str, runtime_port: int = 8123) -> str:
        return await self.client.start_session(container_id, runtime_port)

    async def stop(self, container_id: str) -> None:
        await self._waited(f"stopping {container_id}", self.client.stop_session(container_id))

    async def destroy(self, container_id: str) -> None:
        await self._waited(f"destroying {container_id}", self.client.destroy_session(container_id))

    async def status(self, container_id: str, runtime_port: Optional[int] = None) -> ContainerInfo:
        return await self.client.session_status(container_id, runtime_port)

    async def logs(self, container_id: str, tail: int = 100, container: Optional[str] = None) -> str:
        return await self.client.session_logs(container_id, tail, container)

    # cargo
    async def create_volume(self, name: str, labels: Optional[dict[str, str]] = None,
                            size_limit_mb: Optional[int] = None) -> str:
        """Bay passes no size; the claim then gets `default_size_limit_mb`
        (Bay's default cargo size) or, without it, Berth's configured default.
        A cargo created with a larger size is grown to it by `create`."""
        return await self.client.create_volume(name, labels, size_limit_mb or self.default_size_limit_mb)

    async def delete_volume(self, name: str) -> None:
        await self.client.delete_volume(name)

    async def volume_exists(self, name: str) -> bool:
        return await self.client.volume_exists(name)

    # GC and warm pool
    async def list_runtime_instances(self, labels: dict[str, str]) -> list[RuntimeInstance]:
        return await self.client.list_runtime_instances(labels)

    async def destroy_runtime_instance(self, instance_id: str) -> None:
        await self.client.destroy_runtime_instance(instance_id)

    # session networks: containers of one Pod share localhost
    async def create_session_network(self, session_id: str) -> str:
        return await self.client.create_session_network(session_id)

    async def remove_session_network(self, network_name: str) -> None:
        await self.client.remove_session_network(network_name)

    # multi-container sessions
    async def create_multi(self, session: Any, profile: Any, cargo: Any, network_name: Optional[str] = None,
                           labels: Optional[dict[str, str]] = None) -> list[MultiContainerInfo]:
        body = self._request(session, profile, cargo, labels, single=False)
        body["network_name"] = network_name
        return await self.client.create_multi(body)

    async def start_multi(self, containers: list[Any]) -> list[MultiContainerInfo]:
        return await self.client.start_multi(containers)

    async def stop_multi(self, containers: list[Any]) -> None:
        await self._waited("stopping a multi-container session", self.client.stop_multi(containers))

    async def destroy_multi(self, containers: list[Any]) -> None:
        await self._waited("destroying a multi-container session", self.client.destroy_multi(containers))
