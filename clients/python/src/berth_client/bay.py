"""Point an unmodified Bay at Berth.

Bay picks its driver in `app.api.dependencies.get_driver()`, which builds the
class bound to `K8sDriver` in that module when `driver.type` is `k8s`.
`install()` binds a `BerthDriver` there, configured from Bay's own settings
(GC instance id, global proxy, default cargo size) plus Berth's URL and token.
Nothing of Bay is changed on disk.

Run Bay through it::

    BERTH_URL=http://berth.bay.svc:8080 BERTH_TOKEN_FILE=/var/run/secrets/berth/token \\
        uvicorn berth_client.bay:app --host 0.0.0.0 --port 8114

or call `berth_client.bay.install()` before Bay's app starts (a
`sitecustomize` module, a wrapper script). Bay's config keeps
`driver.type: k8s`; what `driver.k8s` held moves to Berth's own config.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .driver import BerthDriver


def _token(token: Optional[str]) -> str:
    if token:
        return token
    if os.environ.get("BERTH_TOKEN"):
        return os.environ["BERTH_TOKEN"]
    path = os.environ.get("BERTH_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    raise RuntimeError("Berth's token is not set: pass token=, or set BERTH_TOKEN or BERTH_TOKEN_FILE")


def _url(url: Optional[str]) -> str:
    url = url or os.environ.get("BERTH_URL")
    if not url:
        raise RuntimeError("Berth's URL is not set: pass url=, or set BERTH_URL")
    return url


def driver_from_bay_settings(settings: Any, *, url: Optional[str] = None, token: Optional[str] = None,
                             **kwargs: Any) -> BerthDriver:
    """A `BerthDriver` configured as Bay's own Kubernetes driver would be:
    `bay.instance_id` from `settings.gc.get_instance_id()`, the global proxy
    from `settings.proxy`, the default cargo size from
    `settings.cargo.default_size_limit_mb`. `kwargs` go to `BerthClient`
    (e.g. `start_timeout`) or `BerthDriver` (`destroy_timeout`)."""
    gc = getattr(settings, "gc", None)
    instance_id = gc.get_instance_id() if gc is not None and hasattr(gc, "get_instance_id") else None
    cargo = getattr(settings, "cargo", None)
    return BerthDriver.from_settings(
        _url(url), _token(token),
        instance_id=instance_id,
        global_proxy=getattr(settings, "proxy", None),
        default_size_limit_mb=getattr(cargo, "default_size_limit_mb", None),
        **kwargs,
    )


def install(*, url: Optional[str] = None, token: Optional[str] = None, **kwargs: Any) -> None:
    """Makes Bay's `get_driver()` return a `BerthDriver` when Bay's
    `driver.type` is `k8s`. Call it before Bay's app starts. URL and token
    default to `BERTH_URL` and `BERTH_TOKEN` (or `BERTH_TOKEN_FILE`); they are
    read now, so a missing one fails here and not at Bay's first request."""
    import app.api.dependencies as deps  # Bay's module
    from app.config import get_settings  # Bay's settings

    url, token = _url(url), _token(token)

    class BayBerthDriver(BerthDriver):
        # Bay constructs its driver with no arguments.
        def __init__(self) -> None:
            d = driver_from_bay_settings(get_settings(), url=url, token=token, **kwargs)
            super().__init__(d.client, instance_id=d.instance_id, global_proxy=d.global_proxy,
                             default_size_limit_mb=d.default_size_limit_mb, destroy_timeout=d.destroy_timeout)

    deps.K8sDriver = BayBerthDriver
    deps.get_driver.cache_clear()


def __getattr__(name: str) -> Any:
    # `uvicorn berth_client.bay:app`: install, then hand over Bay's own app.
    if name == "app":
        install()
        from app.main import app  # Bay's ASGI app

        return app
    raise AttributeError(name)
