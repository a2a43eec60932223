"""Typed request and response bodies, matching Berth's OpenAPI document."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["created", "running", "exited", "removing", "not_found"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContainerState(_Model):
    name: str
    state: str
    ready: bool
    restart_count: int
    reason: Optional[str] = None
    exit_code: Optional[int] = None


class ContainerInfo(_Model):
    """Bay's container info, from `status`."""

    container_id: str
    status: Status
    endpoint: Optional[str] = None
    exit_code: Optional[int] = None
    containers: list[ContainerState] = Field(default_factory=list)


class RuntimeInstance(_Model):
    id: str
    name: str
    labels: dict[str, str]
    state: str
    created_at: Optional[str] = None


class MultiContainerInfo(_Model):
    name: str
    container_id: str
    endpoint: Optional[str] = None
    status: Status
    runtime_type: str
    capabilities: list[str] = Field(default_factory=list)
    runtime_port: int


class Created(_Model):
    container_id: str
    adopted: bool


class PluginSummary(_Model):
    name: str
    plugin_name: str
    plugin_version: str
    hooks: list[str]
    sha256: str
    from_cache: bool
    load_ms: float


class Plugins(_Model):
    generation: int
    plugins: list[PluginSummary]
    last_reload_error: Optional[str] = None
