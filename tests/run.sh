#!/usr/bin/env bash
# The test command (README): builds what the tests need, brings up the
# project's own Kubernetes control plane, runs every test suite against it,
# and tears the control plane down even when tests fail.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cluster_dir=${BERTH_TEST_CLUSTER_DIR:-/tmp/berth-test-cluster-$$}
cd "$root"

t0=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - t0))" >&2; }

step "building the control plane binaries (cached in ~/.cache/berth)"
tests/cluster/cluster.sh build
tests/kustomize.sh >/dev/null
step "building plugins for wasm32-wasip2"
tests/build-plugins.sh
step "building Berth and its tests"
cargo build --quiet -p berth
cargo test --quiet --workspace --exclude berth-fixture-hostile --exclude berth-fixture-future-wit --exclude berth-fixture-wrong-signature --exclude berth-fixture-big-memory --no-run

status=0
step "Berth's image: the Containerfile built with buildah"
tests/image.sh || status=1

step "control plane fault handling (stale dir, crashing component, no leftovers)"
tests/cluster/selftest.sh || status=1

trap 'tests/cluster/cluster.sh down "$cluster_dir"' EXIT
step "starting the control plane"
kubeconfig=$(tests/cluster/cluster.sh up "$cluster_dir")
export BERTH_TEST_KUBECONFIG=$kubeconfig
export BERTH_TEST_CLUSTER_DIR=$cluster_dir

step "Rust tests (unit, plugin runtime, end-to-end)"
cargo test --no-fail-fast --workspace --exclude berth-fixture-hostile --exclude berth-fixture-future-wit --exclude berth-fixture-wrong-signature --exclude berth-fixture-big-memory || status=1

step "API contract: schemathesis against a live berth serve"
tests/schemathesis.sh || status=1

if [ -d clients/python/tests ]; then
  step "Python client tests"
  tests/python.sh || status=1
fi
step "done (status $status)"
exit $status
