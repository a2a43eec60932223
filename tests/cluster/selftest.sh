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
rm -f "$dir.err" "$dir.pids"

echo "cluster selftest: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
