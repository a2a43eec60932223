#!/usr/bin/env bash
# Builds Berth's image from the Containerfile with buildah and checks what it
# promises: it runs as 65532 with no shell, and the binary inside works.
#
#   tests/image.sh [BINARY]     (default: target/debug/berth)
#
# No base image can be pulled here, so both stages come from this machine:
# the build stage is replaced by a build context holding BINARY (built from
# this tree), and the runtime base is assembled from the files
# distroless/cc holds (glibc, libgcc, CA certificates, passwd with nonroot
# 65532), taken from this Debian 12 host.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$root/target/debug/berth}
command -v buildah >/dev/null || { echo "buildah is missing (Debian's buildah; .ci/run installs it)" >&2; exit 1; }
[ -x "$binary" ] || { echo "$binary is missing: cargo build -p berth" >&2; exit 1; }
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs
work=$(mktemp -d)
trap 'rm -rf "$work"; buildah rm -a >/dev/null 2>&1 || true; buildah rmi --prune >/dev/null 2>&1 || true' EXIT

# The runtime base: what distroless/cc-debian12:nonroot holds.
base=$work/base
mkdir -p "$base/etc/ssl/certs" "$base/tmp" "$base/home/nonroot"
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  install -D "$(readlink -f "$lib")" "$base$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$base/etc/group"
chmod 1777 "$base/tmp"
ctr=$(buildah from scratch)
buildah copy "$ctr" "$base" / >/dev/null
buildah commit -q "$ctr" localhost/berth-runtime-base:test >/dev/null

# The build stage's output: the binary, stripped as a release build is.
mkdir -p "$work/build/out"
strip -o "$work/build/out/berth" "$binary"

buildah build -q --layers=false \
  --build-context build="$work/build" \
  --build-arg RUNTIME_IMAGE=localhost/berth-runtime-base:test \
  -t localhost/berth:test -f "$root/Containerfile" "$root" >/dev/null

fail() { echo "image check failed: $*" >&2; exit 1; }
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' localhost/berth:test)
[ "$user" = "65532:65532" ] || fail "runs as '$user', not 65532:65532"
entry=$(buildah inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' localhost/berth:test)
[ "$entry" = "[/usr/local/bin/berth]" ] || fail "entrypoint $entry"
ctr=$(buildah from localhost/berth:test)
out=$(buildah run "$ctr" -- /usr/local/bin/berth --version)
[ "$out" = "berth 0.1.0" ] || fail "berth --version printed '$out'"
doc=$(buildah run "$ctr" -- /usr/local/bin/berth openapi)
case "$doc" in '{'*'"openapi": "3.'*) ;; *) fail "berth openapi printed '${doc:0:200}'";; esac
if buildah run "$ctr" -- /bin/sh -c true 2>/dev/null; then fail "the image has a shell"; fi
size=$(buildah images --format '{{.Size}}' localhost/berth:test)
echo "image localhost/berth:test ($size): user 65532:65532, no shell, berth runs"
