#!/usr/bin/env bash
# Runs Berth the way a user would, with no cluster at hand: starts the
# project's own control plane (etcd, kube-apiserver, scheduler,
# controller-manager, kwok), builds the shipped plugins, and serves the API
# on 127.0.0.1:${BERTH_PORT:-8080} with deploy/berth.example.yaml.
# Ctrl-C stops Berth and the control plane.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cluster_dir=${BERTH_LOCAL_DIR:-/tmp/berth-local}
port=${BERTH_PORT:-8080}

"$root/tests/cluster/cluster.sh" build
"$root/tests/build-plugins.sh"
(cd "$root" && cargo build --quiet -p berth)

berth_pid=
cleanup() {
  [ -n "$berth_pid" ] && kill "$berth_pid" 2>/dev/null && wait "$berth_pid" 2>/dev/null
  "$root/tests/cluster/cluster.sh" down "$cluster_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
kubeconfig=$("$root/tests/cluster/cluster.sh" up "$cluster_dir")
token=${BERTH_TOKEN:-$(openssl rand -hex 24)}
umask 077
echo "$token" >"$cluster_dir/token"
cat >&2 <<MSG

Berth is starting on http://127.0.0.1:$port (namespace bay, plugins: restricted, scheduling, resources).
Token: $token   (also in $cluster_dir/token)
Ready (plugins compiled, isolation applied) when this says "ready":
  curl -s http://127.0.0.1:$port/readyz
Try:
  curl -s -H "Authorization: Bearer $token" http://127.0.0.1:$port/v1/plugins
  curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \\
    http://127.0.0.1:$port/v1/render/pod -d '{"session":{"id":"s1","sandbox_id":"sb1"},"profile":{"id":"python","image":"ship:latest"},"cargo":{"id":"c1","driver_ref":"cargo-c1"}}'

MSG
BERTH_KUBECONFIG=$kubeconfig BERTH_TOKENS=$token BERTH_LISTEN=127.0.0.1:$port \
  "$root/target/debug/berth" serve --config "$root/deploy/berth.example.yaml" &
berth_pid=$!
wait "$berth_pid"
