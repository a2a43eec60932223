"""Async client for Berth's HTTP API: bearer auth, timeouts, one pooled
connection set, and retries with backoff only for calls safe to repeat."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Optional

import httpx

from . import errors
from .models import Created, ContainerInfo, MultiContainerInfo, Plugins, RuntimeInstance


class BerthClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        start_timeout: float = 330.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_connections: int = 100,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )
        # `start` waits for the Pod on the server side, up to Berth's startup timeout.
        self._start_timeout = start_timeout
        self._retries = retries
        self._backoff = backoff

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "BerthClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, *, idempotent: bool, json: Any = None,
                    params: Any = None, timeout: Optional[float] = None) -> Any:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(method, path, json=json, params=params,
                                                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.PoolTimeout) as e:
                if idempotent and attempt < self._retries:
                    attempt += 1
                    await asyncio.sleep(self._backoff * (2 ** (attempt - 1)) * (1 + random.random()))
                    continue
                raise errors.Unavailable(f"cannot reach Berth: {e!r}") from e
            except httpx.TimeoutException as e:
                raise errors.Timeout(f"Berth did not answer in time: {e!r}") from e
            if resp.status_code == 503 and idempotent and attempt < self._retries:
                attempt += 1
                await asyncio.sleep(self._backoff * (2 ** (attempt - 1)) * (1 + random.random()))
                continue
            if resp.status_code == 204:
                return None
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            if resp.status_code >= 400:
                raise errors.from_problem(resp.status_code, body)
            return body

    # --- sessions -------------------------------------------------------------
    # Create is idempotent on Berth's side (a live Pod of the same session is
    # adopted), so it is safe to retry.
    async def create_session(self, body: dict[str, Any]) -> Created:
        return Created.model_validate(await self._call("POST", "/v1/sessions", json=body, idempotent=True))

    async def start_session(self, container_id: str, runtime_port: int) -> str:
        r = await self._call("POST", f"/v1/sessions/{container_id}/start", json={"runtime_port": runtime_port},
                             idempotent=True, timeout=self._start_timeout)
        return r["endpoint"]

    async def stop_session(self, container_id: str) -> None:
        await self._call("POST", f"/v1/sessions/{container_id}/stop", idempotent=True)

    async def destroy_session(self, container_id: str) -> None:
        await self._call("DELETE", f"/v1/sessions/{container_id}", idempotent=True, timeout=self._start_timeout)

    async def session_status(self, container_id: str, runtime_port: Optional[int] = None) -> ContainerInfo:
        params = {"runtime_port": runtime_port} if runtime_port is not None else None
        return ContainerInfo.model_validate(
            await self._call("GET", f"/v1/sessions/{container_id}/status", params=params, idempotent=True))

    async def session_logs(self, container_id: str, tail: int = 100, container: Optional[str] = None) -> str:
        params: dict[str, Any] = {"tail": tail}
        if container:
            params["container"] = container
        return (await self._call("GET", f"/v1/sessions/{container_id}/logs", params=params, idempotent=True))["logs"]

    # --- multi-container ----------------------------------------------------------
    async def create_multi(self, body: dict[str, Any]) -> list[MultiContainerInfo]:
        r = await self._call("POST", "/v1/multi-sessions", json=body, idempotent=True)
        return [MultiContainerInfo.model_validate(x) for x in r]

    async def start_multi(self, containers: list[MultiContainerInfo]) -> list[MultiContainerInfo]:
        r = await self._call("POST", "/v1/multi-sessions/start", idempotent=True, timeout=self._start_timeout,
                             json={"containers": [c.model_dump() for c in containers]})
        return [MultiContainerInfo.model_validate(x) for x in r]

    async def stop_multi(self, containers: list[MultiContainerInfo]) -> None:
        await self._call("POST", "/v1/multi-sessions/stop", idempotent=True,
                         json={"containers": [c.model_dump() for c in containers]})

    async def destroy_multi(self, containers: list[MultiContainerInfo]) -> None:
        await self._call("POST", "/v1/multi-sessions/destroy", idempotent=True, timeout=self._start_timeout,
                         json={"containers": [c.model_dump() for c in containers]})

    # --- cargo volumes ----------------------------------------------------------
    async def create_volume(self, name: str, labels: Optional[dict[str, str]] = None, size_limit_mb: int = 1024) -> str:
        r = await self._call("POST", "/v1/volumes", idempotent=True,
                             json={"name": name, "labels": labels or {}, "size_limit_mb": size_limit_mb})
        return r["volume"]

    async def delete_volume(self, name: str) -> None:
        await self._call("DELETE", f"/v1/volumes/{name}", idempotent=True)

    async def volume_exists(self, name: str) -> bool:
        return bool((await self._call("GET", f"/v1/volumes/{name}", idempotent=True))["exists"])

    # --- GC -----------------------------------------------------------------------
    async def list_runtime_instances(self, labels: dict[str, str]) -> list[RuntimeInstance]:
        r = await self._call("POST", "/v1/runtime-instances/list", json={"labels": labels}, idempotent=True)
        return [RuntimeInstance.model_validate(x) for x in r]

    async def destroy_runtime_instance(self, instance_id: str) -> None:
        await self._call("DELETE", f"/v1/runtime-instances/{instance_id}", idempotent=True)

    # --- misc -----------------------------------------------------------------------
    async def create_session_network(self, session_id: str) -> str:
        r = await self._call("POST", "/v1/session-networks", json={"session_id": session_id}, idempotent=True)
        return r["name"]

    async def remove_session_network(self, name: str) -> None:
        await self._call("DELETE", f"/v1/session-networks/{name}", idempotent=True)

    async def render_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/v1/render/pod", json=body, idempotent=True)

    async def plugins(self) -> Plugins:
        return Plugins.model_validate(await self._call("GET", "/v1/plugins", idempotent=True))
