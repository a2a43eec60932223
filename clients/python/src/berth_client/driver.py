"""A Bay driver backed by Berth: Bay's method names, signatures and return
shapes. Accepts Bay's Session/Profile/Cargo objects, or any objects with the
same attributes."""

from __future__ import annotations

from typing import Any, Optional

from .client import BerthClient
from .models import ContainerInfo, MultiContainerInfo, RuntimeInstance


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


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


def _container(c: Any) -> dict[str, Any]:
    spec = {
        "name": _get(c, "name"),
        "image": _get(c, "image"),
        "runtime_type": str(_get(c, "runtime_type", "ship") or "ship"),
        "runtime_port": int(_get(c, "runtime_port", 8123) or 8123),
        "capabilities": list(_get(c, "capabilities", []) or []),
        "env": dict(_get(c, "env", {}) or {}),
        "primary": bool(_get(c, "primary", False)),
    }
    if _get(c, "resources") is not None:
        spec["resources"] = _resources(_get(c, "resources"))
    if _get(c, "health_check_path"):
        spec["health_check_path"] = _get(c, "health_check_path")
    return spec


def profile_body(profile: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": _get(profile, "id")}
    containers = _get(profile, "containers") or []
    if containers:
        body["containers"] = [_container(c) for c in containers]
    else:
        body["image"] = _get(profile, "image")
        body["runtime_type"] = str(_get(profile, "runtime_type", "ship") or "ship")
        body["runtime_port"] = int(_get(profile, "runtime_port", 8123) or 8123)
        body["capabilities"] = list(_get(profile, "capabilities", []) or [])
        if _get(profile, "resources") is not None:
            body["resources"] = _resources(_get(profile, "resources"))
    body["env"] = dict(_get(profile, "env", {}) or {})
    proxy = _get(profile, "proxy")
    if proxy:
        body["proxy"] = {k: _get(proxy, k) for k in ("http", "https", "no_proxy") if _get(proxy, k)}
    return body


def _request(session: Any, profile: Any, cargo: Any, labels: Optional[dict[str, str]]) -> dict[str, Any]:
    return {
        "session": {"id": _get(session, "id"), "sandbox_id": _get(session, "sandbox_id")},
        "profile": profile_body(profile),
        "cargo": {
            "id": _get(cargo, "id"),
            "driver_ref": _get(cargo, "driver_ref"),
            "size_limit_mb": int(_get(cargo, "size_limit_mb", 1024) or 1024),
        },
        "labels": dict(labels or {}),
    }


class BerthDriver:
    """Drop-in for Bay's Kubernetes driver."""

    def __init__(self, client: BerthClient) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, url: str, token: str, **kwargs: Any) -> "BerthDriver":
        return cls(BerthClient(url, token, **kwargs))

    async def close(self) -> None:
        await self.client.aclose()

    # sessions
    async def create(self, session: Any, profile: Any, cargo: Any, labels: Optional[dict[str, str]] = None) -> str:
        return (await self.client.create_session(_request(session, profile, cargo, labels))).container_id

    async def start(self, container_id: str, runtime_port: int) -> str:
        return await self.client.start_session(container_id, runtime_port)

    async def stop(self, container_id: str) -> None:
        await self.client.stop_session(container_id)

    async def destroy(self, container_id: str) -> None:
        await self.client.destroy_session(container_id)

    async def status(self, container_id: str, runtime_port: Optional[int] = None) -> ContainerInfo:
        return await self.client.session_status(container_id, runtime_port)

    async def logs(self, container_id: str, tail: int = 100, container: Optional[str] = None) -> str:
        return await self.client.session_logs(container_id, tail, container)

    # cargo
    async def create_volume(self, name: str, labels: Optional[dict[str, str]] = None, size_limit_mb: int = 1024) -> str:
        return await self.client.create_volume(name, labels, size_limit_mb)

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
        body = _request(session, profile, cargo, labels)
        body["network_name"] = network_name
        return await self.client.create_multi(body)

    async def start_multi(self, containers: list[MultiContainerInfo]) -> list[MultiContainerInfo]:
        return await self.client.start_multi(containers)

    async def stop_multi(self, containers: list[MultiContainerInfo]) -> None:
        await self.client.stop_multi(containers)

    async def destroy_multi(self, containers: list[MultiContainerInfo]) -> None:
        await self.client.destroy_multi(containers)
