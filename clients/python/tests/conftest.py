"""Runs real `berth serve` processes (built by tests/run.sh) against the real
test control plane, a runtime that answers Bay's health checks on the
loopback Pod addresses, and a small Kubernetes API client for what a test
must check or do behind Berth's back. Tests that cannot find a component
fail loudly."""

from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "python-test-token-" + uuid.uuid4().hex
NAMESPACE = "berth-plain"
WASM = ROOT / "target/wasm32-wasip2/plugin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kubeconfig() -> str:
    kubeconfig = os.environ.get("BERTH_TEST_KUBECONFIG")
    assert kubeconfig, "BERTH_TEST_KUBECONFIG is not set: run through tests/run.sh"
    return kubeconfig


def plugins(level: str = "baseline") -> list[dict[str, Any]]:
    """The security plugin at the level Bay's Ship runs with, and resources."""
    return [
        {"name": "restricted", "path": str(WASM / "berth_plugin_restricted.wasm"),
         "settings": {"level": level, "run_as_user": 1000}},
        {"name": "resources", "path": str(WASM / "berth_plugin_resources.wasm"),
         "settings": {"max": {"cpu": "4"}, "on_exceed": "deny"}},
    ]


class Berth:
    """One `berth serve` process."""

    def __init__(self, workdir: Path, **overrides: Any) -> None:
        binary = ROOT / "target/debug/berth"
        assert binary.exists(), f"{binary} missing: run through tests/run.sh"
        port = _free_port()
        config = {
            "listen": f"127.0.0.1:{port}",
            "tokens": [TOKEN],
            "namespace": NAMESPACE,
            "kubeconfig": _kubeconfig(),
            "startup_timeout_s": 60,
            "plugin_cache_dir": str(ROOT / "target/berth-test-plugin-cache"),
            "plugins": plugins(),
        }
        config.update(overrides)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "berth.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(binary), "serve", "--config", str(path)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                raise AssertionError("berth serve did not become ready:\n" + self.log_path.read_text()[-4000:])
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def berth_url(tmp_path_factory):
    b = Berth(tmp_path_factory.mktemp("berth"))
    yield b.url
    b.stop()


@pytest.fixture(scope="session")
def short_berth_url(tmp_path_factory):
    """A Berth whose waits run out in 3 s and whose claims never bind (their
    StorageClass does not exist), for the paths that end in a timeout."""
    b = Berth(tmp_path_factory.mktemp("berth-short"), startup_timeout_s=3, destroy_timeout_s=3,
              storage_class="berth-test-no-such-class")
    yield b.url
    b.stop()


@pytest.fixture
async def driver(berth_url):
    from berth_client import BerthDriver

    d = BerthDriver.from_settings(berth_url, TOKEN)
    yield d
    await d.close()


class Kube:
    """The few Kubernetes API calls a test makes behind Berth's back, as the
    test cluster's admin."""

    def __init__(self) -> None:
        cfg = yaml.safe_load(Path(_kubeconfig()).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        self.http = httpx.Client(base_url=cluster["server"], verify=ctx, timeout=10)

    def pod(self, name: str) -> Optional[dict[str, Any]]:
        r = self.http.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def pvc(self, name: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name}")
        r.raise_for_status()
        return r.json()

    def patch_pod(self, name: str, patch: dict[str, Any], *, status: bool = False) -> None:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}" + ("/status" if status else "")
        r = self.http.patch(path, content=json.dumps(patch),
                            headers={"Content-Type": "application/merge-patch+json"})
        r.raise_for_status()


@pytest.fixture(scope="session")
def kube():
    k = Kube()
    yield k
    k.http.close()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        ok = self.path == "/health"
        body = b'{"status":"healthy"}' if ok else b"{}"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def runtime_ports():
    """Two runtimes answering `GET /health`. kwok's Pod IPs are in
    127.1.0.0/16, which Linux routes to loopback, so a server listening on
    every address answers at every Pod's endpoint, as Ship would."""
    servers = []
    for _ in range(2):
        srv = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Health)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield [s.server_address[1] for s in servers]
    for s in servers:
        s.shutdown()
