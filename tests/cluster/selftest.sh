#!/usr/bin/env bash
# Fault handling of cluster.sh itself: a stale state dir is cleaned and
# replaced, a component that crashes during `up` fails it with that
# component's log tail, and no process outlives `down` or a failed `up`.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/berth-selftest-XXXXXX)
pass=0
fail=0
check() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "selftest FAILED: $*" >&2; fi; }
alive_from() { local n=0 name pid; [ -f "$1" ] || { echo 0; return; }; while read -r name pid; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done <"$1"; echo $n; }

# 1. A stale dir (junk, and a pid file naming a dead process) is replaced.
echo "junk" >"$dir/etcd.log"
echo "etcd 999999" >"$dir/pids"
"$here/cluster.sh" up "$dir" >/dev/null 2>"$dir.err"
check test -s "$dir/kubeconfig"
check grep -q "removing stale cluster dir" "$dir.err"
cp "$dir/pids" "$dir.pids"
check test "$(alive_from "$dir.pids")" -eq 5
"$here/cluster.sh" down "$dir" 2>/dev/null
check test ! -e "$dir"
check test "$(alive_from "$dir.pids")" -eq 0
check test "$(pgrep -fc -- "$dir/" || true)" -eq 0

# 2. A component that dies during start-up fails `up` with its log tail,
#    and everything started before it is stopped.
BERTH_TEST_KWOK_EXTRA_ARGS=--no-such-flag "$here/cluster.sh" up "$dir" >/dev/null 2>"$dir.err"
check test $? -ne 0
check grep -q "kwok exited during start-up" "$dir.err"
check grep -q "no-such-flag" "$dir.err"
check test "$(grep -c "etcd\|kube-apiserver" <<<"$(pgrep -fa -- "$dir/" || true)")" -eq 0
# Every component's command line names the state dir.
check test "$(pgrep -fc -- "$dir/" || true)" -eq 0
"$here/cluster.sh" down "$dir" 2>/dev/null

# 3. A port already taken is not fatal: up retries on another port.
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)' >"$dir.port" &
holder=$!
for _ in $(seq 50); do [ -s "$dir.port" ] && break; sleep 0.1; done
taken=$(cat "$dir.port")
BERTH_CLUSTER_API_PORT=$taken "$here/cluster.sh" up "$dir" >/dev/null 2>"$dir.err"
check test $? -eq 0
check grep -q "kube-apiserver: port taken, retrying on a new port" "$dir.err"
check test "$(grep -c "127.0.0.1:$taken" "$dir/kubeconfig")" -eq 0
"$here/cluster.sh" down "$dir" 2>/dev/null
kill "$holder" 2>/dev/null
check test "$(pgrep -fc -- "$dir/" || true)" -eq 0

# 4. A half-built cache (a leftover .partial dir, a missing binary) is
#    rebuilt, never reused. Uses a copy of the real cache; Go's build cache
#    makes the rebuild quick.
real_bin=$(ls -d "${BERTH_CACHE:-$HOME/.cache/berth}"/k8s-* | grep -v partial | head -1)
cache=$(mktemp -d /tmp/berth-selftest-cache-XXXXXX)
cp -r "$real_bin" "$cache/"
copy="$cache/$(basename "$real_bin")"
rm "$copy/kube-scheduler"
mkdir "$copy.partial.12345"
BERTH_CACHE=$cache "$here/cluster.sh" build >/dev/null 2>"$dir.err"
check test $? -eq 0
check grep -q "build: kube-apiserver" "$dir.err"
check test -x "$copy/kube-scheduler"
check test ! -e "$copy.partial.12345"
rm -rf "$cache" "$dir.err" "$dir.pids" "$dir.port"

echo "cluster selftest: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
