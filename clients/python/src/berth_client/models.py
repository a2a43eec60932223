"""Typed request and response bodies, matching Berth's OpenAPI document."""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class ContainerStatus(str, Enum):
    """Bay's status words, as a `str` enum like Bay's own `ContainerStatus`:
    members compare equal to Bay's members and to plain strings, and Bay's
    code can read `.value`."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    REMOVING = "removing"
    NOT_FOUND = "not_found"

    def __str__(self) -> str:
        return self.value


Status = ContainerStatus


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContainerState(_Model):
    name: str
    state: str
    ready: bool
    restart_count: int
    reason: Optional[str] = None
    message: Optional[str] = None
    exit_code: Optional[int] = None


class ContainerInfo(_Model):
    """Bay's `ContainerInfo`, from `status`; `containers` adds each
    container's state (sidecars included)."""

    container_id: str
    status: ContainerStatus
    endpoint: Optional[str] = None
    exit_code: Optional[int] = None
    containers: list[ContainerState] = Field(default_factory=list)
    # Why the session is not running, in Kubernetes' words (the scheduler's
    # message while it waits, `OOMKilled`, `Evicted`, …); None while running.
    reason: Optional[str] = None
    message: Optional[str] = None


class RuntimeInstance(_Model):
    id: str
    name: str
    labels: dict[str, str]
    state: str
    created_at: Optional[str] = None


class MultiContainerInfo(_Model):
    """Bay's `MultiContainerInfo`: one container of a multi-container
    session. Every container's `container_id` is the session's Pod."""

    name: str
    container_id: str
    endpoint: Optional[str] = None
    status: ContainerStatus = ContainerStatus.CREATED
    runtime_type: str = "ship"
    capabilities: list[str] = Field(default_factory=list)
    runtime_port: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """What Bay stores for the container (Bay's `to_dict()` keys, plus
        `runtime_port`)."""
        return {
            "name": self.name,
            "container_id": self.container_id,
            "endpoint": self.endpoint,
            "status": self.status.value,
            "runtime_type": self.runtime_type,
            "capabilities": list(self.capabilities),
            "runtime_port": self.runtime_port,
        }


class Created(_Model):
    container_id: str
    adopted: bool
    warnings: list[str] = Field(default_factory=list)


class Origin(_Model):
    """Where a plugin's component came from: a file, a registry, or the
    digest cache; for an OCI plugin, the resolved digest and signing key."""

    fetched_from: str
    reference: Optional[str] = None
    digest: Optional[str] = None
    signed_by: Optional[str] = None


class PluginSummary(_Model):
    name: str
    plugin_name: str
    plugin_version: str
    hooks: list[str]
    sha256: str
    origin: Origin
    from_cache: bool
    load_ms: float


class ConfigMapStatus(_Model):
    """The watched plugin ConfigMap and what became of its latest version."""

    configmap: str
    resource_version: Optional[str] = None
    generation: Optional[int] = None
    error: Optional[str] = None


class Plugins(_Model):
    generation: int
    plugins: list[PluginSummary]
    last_reload_error: Optional[str] = None
    configmap: Optional[ConfigMapStatus] = None
