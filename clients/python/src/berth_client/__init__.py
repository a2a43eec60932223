"""Bay's driver backed by Berth."""

from .client import BerthClient
from .driver import BerthDriver
from .errors import (BerthError, Conflict, DeniedByPolicy, InvalidRequest, NotFound, Overloaded, PluginFailed,
                     ShuttingDown, StartFailed, Timeout, Unauthorized, Unavailable)
from .models import ContainerInfo, ContainerState, ContainerStatus, MultiContainerInfo, RuntimeInstance

__all__ = [
    "BerthClient", "BerthDriver", "BerthError", "Conflict", "DeniedByPolicy", "InvalidRequest", "NotFound",
    "Overloaded", "PluginFailed", "ShuttingDown", "StartFailed", "Timeout", "Unauthorized", "Unavailable", "ContainerInfo", "ContainerState",
    "MultiContainerInfo", "RuntimeInstance", "ContainerStatus",
]
