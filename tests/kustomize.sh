#!/usr/bin/env bash
# Prints the path of a kustomize binary (the one `kubectl apply -k` embeds),
# built from the Go module proxy into ~/.cache/berth on first use. The deploy
# test renders deploy/ with it, as `kubectl apply -k deploy/` would.
set -euo pipefail
version=v5.5.0
dir=${BERTH_CACHE:-$HOME/.cache/berth}/kustomize-$version
if [ ! -x "$dir/kustomize" ]; then
  command -v go >/dev/null || { echo "Go is required to build kustomize" >&2; exit 1; }
  mkdir -p "$dir"
  GOBIN="$dir" GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$version" >&2
fi
echo "$dir/kustomize"
