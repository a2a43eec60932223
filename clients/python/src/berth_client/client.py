"""Async client for Berth's HTTP API: bearer auth, timeouts, one pooled
connection set, and retries with backoff only where a retry cannot multiply a
wait."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Optional

import httpx

from . import errors
from .models import Created, ContainerInfo, MultiContainerInfo, Plugins, RuntimeInstance

# Errors raised before a request reached Berth: repeating it cannot repeat
# any work or any wait.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors after which the request may have reached Berth.
_MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def container_ref(c: Any) -> dict[str, Any]:
    """A multi-container entry as Berth reads it back, from our
    `MultiContainerInfo`, Bay's (rebuilt from its database without port or
    status) or a dict."""
    ref: dict[str, Any] = {
        "name": _get(c, "name"),
        "container_id": _get(c, "container_id"),
        "runtime_type": str(_get(c, "runtime_type", "ship") or "ship"),
        "capabilities": list(_get(c, "capabilities", []) or []),
    }
    port = _get(c, "runtime_port")
    if port is not None:
        ref["runtime_port"] = int(port)
    return ref


class BerthClient:
    """`timeout` bounds ordinary calls; `start_timeout` bounds the calls that
    wait on the server side (start, stop, destroy): set it above Berth's
    `startup_timeout_s` and `destroy_timeout_s`. Those calls are retried only
    when they never reached Berth, so a timeout is never multiplied."""

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
        self._start_timeout = start_timeout
        self._retries = retries
        self._backoff = backoff

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "BerthClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(self._backoff * (2 ** (attempt - 1)) * (1 + random.random()))

    async def _call(self, method: str, path: str, *, idempotent: bool, waits: bool = False, json: Any = None,
                    params: Any = None) -> Any:
        """`idempotent`: safe to send twice. `waits`: Berth waits on the
        server side before it answers; such a call is retried only when it
        never reached Berth, never after a 503 or a broken read, so the
        caller waits at most one server-side timeout."""
        attempt = 0
        timeout = self._start_timeout if waits else httpx.USE_CLIENT_DEFAULT
        while True:
            try:
                resp = await self._http.request(method, path, json=json, params=params, timeout=timeout)
            except _NOT_SENT as e:
                if idempotent and attempt < self._retries:
                    attempt += 1
                    await self._pause(attempt)
                    continue
                raise errors.Unavailable(f"cannot reach Berth: {e!r}") from e
            except _MAYBE_SENT as e:
                if idempotent and not waits and attempt < self._retries:
                    attempt += 1
                    await self._pause(attempt)
                    continue
                raise errors.Unavailable(f"lost the connection to Berth: {e!r}") from e
            except httpx.TimeoutException as e:
                raise errors.Timeout(f"Berth did not answer in time: {e!r}") from e
            if resp.status_code == 503 and idempotent and not waits and attempt < self._retries:
                attempt += 1
                await self._pause(attempt)
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
                             idempotent=True, waits=True)
        return r["endpoint"]

    async def stop_session(self, container_id: str) -> None:
        await self._call("POST", f"/v1/sessions/{container_id}/stop", idempotent=True, waits=True)

    async def destroy_session(self, container_id: str) -> None:
        await self._call("DELETE", f"/v1/sessions/{container_id}", idempotent=True, waits=True)

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

    async def start_multi(self, containers: list[Any]) -> list[MultiContainerInfo]:
        r = await self._call("POST", "/v1/multi-sessions/start", idempotent=True, waits=True,
                             json={"containers": [container_ref(c) for c in containers]})
        return [MultiContainerInfo.model_validate(x) for x in r]

    async def stop_multi(self, containers: list[Any]) -> None:
        await self._call("POST", "/v1/multi-sessions/stop", idempotent=True, waits=True,
                         json={"containers": [container_ref(c) for c in containers]})

    async def destroy_multi(self, containers: list[Any]) -> None:
        await self._call("POST", "/v1/multi-sessions/destroy", idempotent=True, waits=True,
                         json={"containers": [container_ref(c) for c in containers]})

    # --- cargo volumes ----------------------------------------------------------
    async def create_volume(self, name: str, labels: Optional[dict[str, str]] = None,
                            size_limit_mb: Optional[int] = None) -> str:
        body: dict[str, Any] = {"name": name, "labels": labels or {}}
        if size_limit_mb is not None:
            body["size_limit_mb"] = int(size_limit_mb)
        r = await self._call("POST", "/v1/volumes", idempotent=True, json=body)
        return r["volume"]

    async def delete_volume(self, name: str) -> None:
        await self._call("DELETE", f"/v1/volumes/{name}", idempotent=True)

    async def volume_exists(self, name: str) -> bool:
        try:
            return bool((await self._call("GET", f"/v1/volumes/{name}", idempotent=True))["exists"])
        except errors.NotFound:
            return False

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
