"""Runs a real `berth serve` (built by tests/run.sh) against the real test
control plane. Tests that cannot find either fail loudly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "python-test-token-" + uuid.uuid4().hex
NAMESPACE = "berth-plain"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def berth_url(tmp_path_factory):
    kubeconfig = os.environ.get("BERTH_TEST_KUBECONFIG")
    assert kubeconfig, "BERTH_TEST_KUBECONFIG is not set: run through tests/run.sh"
    binary = ROOT / "target/debug/berth"
    assert binary.exists(), f"{binary} missing: run through tests/run.sh"
    wasm = ROOT / "target/wasm32-wasip2/plugin"
    port = _free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "tokens": [TOKEN],
        "namespace": NAMESPACE,
        "kubeconfig": kubeconfig,
        "startup_timeout_s": 60,
        "plugin_cache_dir": str(ROOT / "target/berth-test-plugin-cache"),
        "plugins": [
            {"name": "restricted", "path": str(wasm / "berth_plugin_restricted.wasm"), "settings": {"run_as_user": 1000}},
            {"name": "resources", "path": str(wasm / "berth_plugin_resources.wasm"),
             "settings": {"max": {"cpu": "4"}, "on_exceed": "deny"}},
        ],
    }
    path = tmp_path_factory.mktemp("berth") / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    log = open(path.parent / "berth.log", "w")
    proc = subprocess.Popen([str(binary), "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("berth serve did not become ready:\n" + (path.parent / "berth.log").read_text()[-4000:])
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
async def driver(berth_url):
    from berth_client import BerthDriver

    d = BerthDriver.from_settings(berth_url, TOKEN)
    yield d
    await d.close()
