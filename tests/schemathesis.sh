#!/usr/bin/env bash
# API contract: schemathesis (PyPI) drives a live `berth serve` from its own
# /openapi.json, every check, the stateless phases, and fails on any
# finding. Needs the control plane (BERTH_TEST_KUBECONFIG) and a built berth.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${BERTH_TEST_KUBECONFIG:?run through tests/run.sh}"
venv=$root/target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"

work=$(mktemp -d)
token=schemathesis-$(openssl rand -hex 12)
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
wasm=$root/target/wasm32-wasip2/plugin
cat >"$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
tokens: [$token]
namespace: bay
# Claims never bind (no such StorageClass): a run makes many volumes and
# must not use up the test cluster's PersistentVolumes.
storage_class: berth-schemathesis-none
kubeconfig: $BERTH_TEST_KUBECONFIG
startup_timeout_s: 5
destroy_timeout_s: 5
plugin_cache_dir: $root/target/berth-test-plugin-cache
plugins:
  - { name: restricted, path: $wasm/berth_plugin_restricted.wasm, settings: { level: baseline } }
  - { name: resources, path: $wasm/berth_plugin_resources.wasm, settings: { max: { cpu: "4" }, on_exceed: clamp } }
YAML
"$root/target/debug/berth" serve --config "$work/config.yaml" >"$work/berth.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$work/berth.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "berth did not become ready" >&2; cat "$work/berth.log" >&2; exit 1; }

status=0
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --phases examples,coverage,fuzzing \
  --max-examples "${BERTH_SCHEMATHESIS_EXAMPLES:-25}" --seed 1 \
  --request-timeout 30 || status=$?
if [ $status -ne 0 ]; then
  echo "== berth log (tail)" >&2
  tail -50 "$work/berth.log" >&2
fi
exit $status
