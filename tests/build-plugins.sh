#!/usr/bin/env bash
# Builds the shipped plugins and the test fixture plugins for wasm32-wasip2:
# the Rust ones with cargo, the Python ones with the Python SDK
# (componentize-py, installed from PyPI into target/py-plugin-venv).
# Output: target/wasm32-wasip2/plugin/*.wasm
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/../shared/toolchain/ensure-wasm32-wasip2"
cd "$root"
cargo build --quiet --target wasm32-wasip2 --profile plugin \
  -p berth-plugin-restricted -p berth-plugin-scheduling -p berth-plugin-resources \
  -p berth-fixture-hostile -p berth-fixture-future-wit \
  -p berth-fixture-wrong-signature -p berth-fixture-big-memory -p berth-fixture-image-policy-rs

venv=$root/target/py-plugin-venv
if [ ! -x "$venv/bin/berth-plugin-build" ] || [ "$root/plugins/sdk-python/pyproject.toml" -nt "$venv/bin/berth-plugin-build" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root/plugins/sdk-python"
fi
# componentize-py takes ~12 s a plugin: build only what changed.
for project in plugins/image-policy tests/fixtures/plugins/hostile-python; do
  "$venv/bin/berth-plugin-build" --if-stale "$project" >&2
done
ls "$root"/target/wasm32-wasip2/plugin/*.wasm >&2
