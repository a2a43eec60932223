"""Berth policy plugins in Python.

A plugin is a class that shapes the Pod (and the cargo PVC) Berth builds for
one of Bay's sandbox sessions, or denies it::

    import berth_plugin as berth

    class Labels(berth.Plugin):
        name = "labels"
        version = "0.1.0"
        hooks = {"pod"}

        def validate_settings(self, settings):
            if not isinstance(settings.get("team"), str):
                raise ValueError("settings.team must be a string")

        def shape_pod(self, settings, ctx, pod):
            berth.labels(pod)["team"] = settings["team"]

    Policy = berth.export(Labels)

Objects are plain dicts of the Kubernetes JSON (camelCase keys, as
``kubectl get -o json`` shows them). ``shape_pod`` changes the dict in place
(or returns a new one). ``raise berth.Deny("why")`` denies the session with
that message; any other exception is reported as the plugin failing, with
its type and message. Build the component with ``berth-plugin-build`` (see
``berth_plugin.build``); it runs in Berth's sandbox with a fresh interpreter
state per call, a deadline and a memory cap, and no filesystem, network,
environment or clock to block on.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional

__all__ = [
    "Context",
    "Deny",
    "Plugin",
    "container",
    "containers",
    "env",
    "export",
    "labels",
    "log",
    "security_context",
    "set_env",
]

Object = Dict[str, Any]


class Deny(Exception):
    """Deny the session: the message is shown to Bay's user as it is."""


class Plugin:
    """Base class of a policy. Override what the plugin needs."""

    #: Short identifier, e.g. "image-policy".
    name: str = "plugin"
    #: The plugin's own version (semver).
    version: str = "0.1.0"
    #: Which objects the plugin shapes: "pod", "pvc" or both.
    hooks: Iterable[str] = ("pod",)

    def validate_settings(self, settings: Any) -> None:
        """Check the operator's settings (parsed JSON) at load; raise to refuse them."""

    def shape_pod(self, settings: Any, ctx: "Context", pod: Object) -> Optional[Object]:
        """Shape the session Pod in place (or return a new one)."""
        return None

    def shape_pvc(self, settings: Any, ctx: "Context", pvc: Object) -> Optional[Object]:
        """Shape the cargo PersistentVolumeClaim in place (or return a new one)."""
        return None


class Context:
    """What Bay asked for: the session's ids, its namespace, the runtime port,
    the cargo's size and the labels Berth sets."""

    def __init__(self, wit_ctx: Any):
        self.session_id: str = wit_ctx.session_id
        self.sandbox_id: str = wit_ctx.sandbox_id
        self.cargo_id: str = wit_ctx.cargo_id
        self.profile_id: str = wit_ctx.profile_id
        self.namespace: str = wit_ctx.namespace
        self.runtime_port: int = wit_ctx.runtime_port
        self.cargo_size_limit_mb: int = wit_ctx.cargo_size_limit_mb
        self.labels: Dict[str, str] = dict(wit_ctx.labels)
        self._containers = wit_ctx.containers

    def containers(self) -> List[Object]:
        """The profile's container specs as Bay sent them (name, image,
        runtime_type, runtime_port, resources, capabilities, env)."""
        return json.loads(self._containers) if self._containers else []


# -- light helpers over the plain dicts ---------------------------------------


def containers(pod: Object, init: bool = False) -> List[Object]:
    """The Pod's containers (or init containers): the Pod's own list, whose
    items you may change; an empty list, not added to the Pod, if it has none."""
    return pod.get("spec", {}).get("initContainers" if init else "containers") or []


def container(pod: Object, name: str) -> Object:
    """The container called ``name``; KeyError if the Pod has none."""
    for c in containers(pod):
        if c.get("name") == name:
            return c
    raise KeyError(f"the Pod has no container {name!r}")


def labels(obj: Object) -> Dict[str, str]:
    """The object's labels, created if missing."""
    return obj.setdefault("metadata", {}).setdefault("labels", {})


def env(c: Object) -> Dict[str, Optional[str]]:
    """A container's plain environment variables by name (a read-only view;
    variables from a source read as None)."""
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def set_env(c: Object, name: str, value: str) -> None:
    """Set (or replace) one environment variable of a container."""
    entries = c.setdefault("env", [])
    for e in entries:
        if e.get("name") == name:
            e.clear()
            e.update({"name": name, "value": value})
            return
    entries.append({"name": name, "value": value})


def security_context(c: Object) -> Object:
    """A container's (or a Pod spec's) securityContext, created if missing."""
    return c.setdefault("securityContext", {})


def log(level: str, message: str) -> None:
    """Log through Berth, attributed to this plugin and to the request it
    serves. ``level``: trace, debug, info, warn or error."""
    from wit_world.imports import host

    host.log(getattr(host.Level, level.upper()), message)


# -- the component boundary ----------------------------------------------------


def _settings(text: str) -> Any:
    return json.loads(text) if text else None


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def export(plugin_cls: type) -> type:
    """The class componentize-py exports for ``plugin_cls``: assign it to
    ``Policy`` in the plugin's module (``Policy = berth.export(MyPlugin)``)."""
    # Generated by componentize-py from the WIT world at build time.
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import types

    plugin = plugin_cls()
    hooks = {h.lower() for h in plugin.hooks}
    unknown = hooks - {"pod", "pvc"}
    if unknown:
        raise ValueError(f"{plugin_cls.__name__}.hooks: unknown {sorted(unknown)}; use 'pod', 'pvc'")
    flags = types.Hooks(0)
    if "pod" in hooks:
        flags |= types.Hooks.POD
    if "pvc" in hooks:
        flags |= types.Hooks.PVC

    def shape(method: Any, settings: str, wit_ctx: Any, text: str) -> str:
        try:
            obj = json.loads(text)
            out = method(_settings(settings), Context(wit_ctx), obj)
            return json.dumps(obj if out is None else out, separators=(",", ":"))
        except Deny as e:
            raise Err(types.Rejection_Deny(str(e)))
        except Exception as e:  # the plugin failed: say how, in one line
            raise Err(types.Rejection_Error(_reason(e)))

    class Policy(exports.Policy):
        def info(self) -> Any:
            return types.PluginInfo(name=plugin.name, version=plugin.version, hooks=flags)

        def validate_settings(self, settings: str) -> None:
            try:
                plugin.validate_settings(_settings(settings))
            except Exception as e:
                raise Err(str(e) or _reason(e))

        def shape_pod(self, settings: str, ctx: Any, pod: str) -> str:
            return shape(plugin.shape_pod, settings, ctx, pod)

        def shape_pvc(self, settings: str, ctx: Any, pvc: str) -> str:
            return shape(plugin.shape_pvc, settings, ctx, pvc)

    return Policy
