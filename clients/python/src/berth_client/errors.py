"""Berth's problem codes as exceptions a caller can catch by kind."""

from __future__ import annotations

from typing import Any


class BerthError(Exception):
    """Any error Berth reported (or a failure to reach it)."""

    code = "internal"

    def __init__(self, detail: str, *, status: int | None = None, problem: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.problem = problem or {}


class InvalidRequest(BerthError):
    code = "invalid_request"


class Unauthorized(BerthError):
    code = "unauthorized"


class NotFound(BerthError):
    code = "not_found"


class Conflict(BerthError):
    code = "conflict"


class DeniedByPolicy(BerthError):
    """A policy plugin (or Kubernetes admission) refused; `plugin` says which."""

    code = "denied_by_policy"

    @property
    def plugin(self) -> str | None:
        return self.problem.get("plugin")


class PluginFailed(BerthError):
    code = "plugin_failed"

    @property
    def plugin(self) -> str | None:
        return self.problem.get("plugin")


class StartFailed(BerthError):
    """The session cannot start; `reason` is Kubernetes' (ErrImagePull, Unschedulable, ...)."""

    code = "start_failed"

    @property
    def reason(self) -> str | None:
        return self.problem.get("reason")


class Timeout(BerthError):
    code = "timeout"


class Unavailable(BerthError):
    """Berth or the Kubernetes API behind it cannot be reached."""

    code = "kubernetes_unavailable"


class Overloaded(Unavailable):
    """Every policy chain slot stayed busy: retry after a moment (Berth sends
    `Retry-After`). Idempotent calls are retried by the client."""

    code = "overloaded"


class ShuttingDown(Unavailable):
    """The Berth replica is draining and cut a wait short: retry, and the
    Service sends the call to another replica (Berth sends `Retry-After`)."""

    code = "shutting_down"


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidRequest, Unauthorized, NotFound, Conflict, DeniedByPolicy, PluginFailed, StartFailed, Timeout,
                Unavailable, Overloaded, ShuttingDown)
}


def from_problem(status: int, body: Any) -> BerthError:
    if isinstance(body, dict) and "code" in body:
        cls = _BY_CODE.get(body["code"], BerthError)
        return cls(str(body.get("detail", body["code"])), status=status, problem=body)
    return BerthError(f"HTTP {status}: {body!r}", status=status)
