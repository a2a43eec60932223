#!/usr/bin/env bash
# A real Kubernetes control plane for Berth's tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler built from source, and kwok standing
# in for nodes and kubelets. Everything listens on 127.0.0.1 only.
#
#   cluster.sh build          build (or reuse) the binaries in $BERTH_CACHE
#   cluster.sh up [DIR]       start a cluster whose state lives in DIR
#   cluster.sh down [DIR]     stop every process `up` started, remove DIR
#   cluster.sh replace-list V print the staging replace list for k8s.io/kubernetes V
#
# `up` prints the kubeconfig path; DIR defaults to $BERTH_CLUSTER_DIR or
# /tmp/berth-cluster. See tests/cluster/README.md for what is where.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=v1.35.4
KWOK_VERSION=v0.8.0
CACHE_ROOT=${BERTH_CACHE:-$HOME/.cache/berth}
# The cache key covers everything that changes the binaries: versions, the
# pinned module graph and the Go toolchain.
GO_VERSION=$(go env GOVERSION 2>/dev/null || echo nogo)
KEY=$(cat "$HERE/k8s/go.mod" "$HERE/k8s/go.sum" <(echo "$KWOK_VERSION $GO_VERSION") | sha256sum | cut -c1-12)
BIN=${BERTH_K8S_BIN:-$CACHE_ROOT/k8s-$K8S_VERSION-$KEY}
DIR=${2:-${BERTH_CLUSTER_DIR:-/tmp/berth-cluster}}

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build ----
step() { # name command...
  local name=$1; shift
  local t0=$SECONDS
  log "build: $name ..."
  "$@"
  log "build: $name done in $((SECONDS - t0))s"
}

build_k8s() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldf="-s -w" p
  # Without these the binaries report v0.0.0-master, which clients read.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  (cd "$HERE/k8s" && go build -trimpath -ldflags="$ldf" -o "$STAGE/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
}

build_etcd() {
  # etcd comes from the same module graph, so it is exactly the version the
  # apiserver's client expects. The explicit -o: the package's last path element is "v3".
  (cd "$HERE/k8s" && go build -trimpath -ldflags="-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  GOBIN="$STAGE" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok v0.8 has no built-in stages: `up` passes kwok's own stage kustomizations
  # (node init, lease heartbeat, pod ready/complete/delete, and the volume
  # provisioner through an overlay) from its module source.
  local src
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src/kustomize/stage/fast" ] || die "kwok stages not found in $src"
  cp -r "$src/kustomize/stage" "$STAGE/kwok-stage"
  chmod -R u+w "$STAGE/kwok-stage"
}

ARTIFACTS="kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwok-stage/fast/kustomization.yaml"
cache_complete() {
  local b
  for b in $ARTIFACTS; do [ -s "$1/$b" ] || return 1; done
}

cmd_build() {
  command -v go >/dev/null || die "go is not installed"
  export GOTOOLCHAIN=local CGO_ENABLED=0
  if [ -f "$BIN/.complete" ] && cache_complete "$BIN"; then
    log "binaries cached in $BIN"
    return 0
  fi
  local free_kb
  free_kb=$(df -Pk "$CACHE_ROOT" 2>/dev/null | awk 'NR==2{print $4}' || echo 0)
  mkdir -p "$CACHE_ROOT"
  free_kb=$(df -Pk "$CACHE_ROOT" | awk 'NR==2{print $4}')
  [ "${free_kb:-0}" -gt 6000000 ] || die "need ~6 GB free for the Go build, $CACHE_ROOT has $((free_kb / 1024)) MB"
  # A half-built cache (killed build, full disk) is never reused: binaries go
  # to a staging dir and are moved into place only once all of them work.
  STAGE="$BIN.partial.$$"
  rm -rf "$BIN" "$BIN".partial.*
  mkdir -p "$STAGE"
  local t0=$SECONDS
  step "kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION" build_k8s
  step "etcd (from the same module graph)" build_etcd
  step "kwok $KWOK_VERSION" build_kwok
  cache_complete "$STAGE" || die "some binaries were not built into $STAGE"
  "$STAGE/kube-apiserver" --version | grep -q "$K8S_VERSION" || die "kube-apiserver does not report $K8S_VERSION"
  "$STAGE/etcd" --version >/dev/null || die "etcd does not run"
  "$STAGE/kwok" --version >/dev/null 2>&1 || "$STAGE/kwok" --help >/dev/null || die "kwok does not run"
  touch "$STAGE/.complete"
  mv "$STAGE" "$BIN"
  log "all binaries built in $((SECONDS - t0))s into $BIN"
}

cmd_replace_list() {
  local v=${1:?version, e.g. v1.35.4} mod
  mod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local staging="v0.${v#v1.}"
  grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$mod" | awk -v s="$staging" '{printf "\t%s => %s %s\n", $1, $1, s}' | sort -u
}

case "${1:-}" in
  build) cmd_build ;;
  replace-list) cmd_replace_list "${2:-}" ;;
  *) source "$HERE/lifecycle.sh"; lifecycle_main "$@" ;;
esac
