"""`berth_client.bay` makes an unmodified Bay build Berth's driver from Bay's
own settings. Bay's package is stood in for by `tests/fake_bay` (the module
names and globals the adapter touches, nothing more)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from conftest import TOKEN

FAKE_BAY = str(Path(__file__).parent / "fake_bay")


@pytest.fixture
def bay(monkeypatch, berth_url):
    monkeypatch.syspath_prepend(FAKE_BAY)
    monkeypatch.setenv("BERTH_URL", berth_url)
    monkeypatch.setenv("BERTH_TOKEN", TOKEN)
    for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        monkeypatch.delitem(sys.modules, name)
    import berth_client.bay as adapter

    yield importlib.reload(adapter)


async def test_install_makes_get_driver_return_a_configured_berth_driver(bay):
    from berth_client import BerthDriver, ContainerStatus

    bay.install()
    from app.api.dependencies import get_driver

    d = get_driver()
    assert isinstance(d, BerthDriver)
    assert d is get_driver()  # Bay's cache still holds one driver
    assert d.instance_id == "bay-fake-1"
    assert d.default_size_limit_mb == 2048
    assert d.global_proxy.http_proxy == "http://proxy:3128"
    info = await d.status("bay-session-never-made")
    assert info.status == ContainerStatus.NOT_FOUND
    await d.close()


def test_uvicorn_target_installs_and_hands_over_bays_app(bay):
    import app.main

    assert bay.app is app.main.app
    import app.api.dependencies as deps

    assert deps.K8sDriver.__name__ == "BayBerthDriver"


def test_missing_url_or_token_fails_at_install(bay, monkeypatch):
    monkeypatch.delenv("BERTH_TOKEN")
    with pytest.raises(RuntimeError, match="BERTH_TOKEN"):
        bay.install()
    monkeypatch.setenv("BERTH_TOKEN", TOKEN)
    monkeypatch.delenv("BERTH_URL")
    with pytest.raises(RuntimeError, match="BERTH_URL"):
        bay.install()
