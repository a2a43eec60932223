#!/usr/bin/env bash
# Builds the shipped plugins and the test fixture plugins for wasm32-wasip2.
# Output: target/wasm32-wasip2/plugin/*.wasm
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/../shared/toolchain/ensure-wasm32-wasip2"
cd "$root"
cargo build --quiet --target wasm32-wasip2 --profile plugin \
  -p berth-plugin-restricted -p berth-plugin-scheduling -p berth-plugin-resources \
  -p berth-fixture-hostile -p berth-fixture-future-wit \
  -p berth-fixture-wrong-signature -p berth-fixture-big-memory
ls "$root"/target/wasm32-wasip2/plugin/*.wasm >&2
