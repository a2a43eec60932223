# shellcheck shell=bash
# up / down of the test control plane; sourced by cluster.sh, which sets
# BIN, DIR, log, die and cmd_build.

PIDS_FILE() { echo "$DIR/pids"; }

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME LOGFILE CMD... : start a component in its own session, record its pid.
start() {
  local name=$1 logf=$2; shift 2
  setsid "$@" >"$logf" 2>&1 < /dev/null &
  local pid=$!
  echo "$name $pid" >>"$(PIDS_FILE)"
  eval "PID_${name//-/_}=$pid"
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_ready NAME PID TIMEOUT_S CHECK...: poll CHECK until it succeeds; fail with
# the component's log tail as soon as its process dies.
wait_ready() {
  local name=$1 pid=$2 timeout=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      log "$name exited during start-up; last lines of $DIR/$name.log:"
      tail -n 30 "$DIR/$name.log" >&2
      return 1
    fi
    [ $SECONDS -lt $deadline ] || { log "$name not ready after ${timeout}s; last lines of its log:"; tail -n 30 "$DIR/$name.log" >&2; return 1; }
    sleep 0.3
  done
}

kcurl() { curl -fsS --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$@"; }
api() { # METHOD PATH [JSON]
  if [ $# -ge 3 ]; then
    kcurl -X "$1" -H 'Content-Type: application/json' --data-binary "$3" "$API$2"
  else
    kcurl -X "$1" "$API$2"
  fi
}

make_pki() {
  local p=$DIR/pki
  mkdir -p "$p"
  sign() { # name subject extensions [self]
    openssl genrsa -out "$p/$1.key" 2048 2>/dev/null
    openssl req -new -key "$p/$1.key" -subj "$2" -out "$p/$1.csr" 2>/dev/null
    printf "$3" >"$p/$1.ext"
    if [ "${4:-}" = self ]; then
      openssl x509 -req -in "$p/$1.csr" -signkey "$p/$1.key" -days 3650 -sha256 -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
    else
      openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 -sha256 -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
    fi
  }
  # v3 certificates with SANs everywhere: rustls rejects v1 and Go ignores the CN.
  sign ca "/CN=berth-test-ca" 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\n' self
  sign apiserver "/CN=kube-apiserver" 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1\n'
  sign admin "/O=system:masters/CN=berth-test-admin" 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n'
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  chmod 600 "$p"/*.key
}

write_kubeconfig() {
  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-test
  cluster: {server: "$API", certificate-authority: $DIR/pki/ca.crt}
users:
- name: admin
  user: {client-certificate: $DIR/pki/admin.crt, client-key: $DIR/pki/admin.key}
contexts:
- name: berth-test
  context: {cluster: berth-test, user: admin}
current-context: berth-test
EOF
}

# Each component gets up to 3 tries on fresh ports: a port picked as free can
# be taken by someone else before the component binds it.
start_etcd() {
  local try
  for try in 1 2 3; do
    ETCD_PORT=$(free_port); ETCD_PEER=$(free_port)
    rm -rf "$DIR/etcd-data"; mkdir -m 700 "$DIR/etcd-data"
    start etcd "$DIR/etcd.log" "$BIN/etcd" --name=node0 --data-dir="$DIR/etcd-data" \
      --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls="http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER" \
      --initial-cluster="node0=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls="" \
      --auto-compaction-retention=1 --quota-backend-bytes=2147483648 \
      --unsafe-no-fsync=true --logger=zap --log-level=warn
    if wait_ready etcd "$PID_etcd" 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"; then return 0; fi
    grep -q "address already in use" "$DIR/etcd.log" || return 1
    log "etcd: port taken, retrying on new ports"
  done
  return 1
}

start_apiserver() {
  local try
  # BERTH_CLUSTER_API_PORT asks for a stable port (e.g. for a long-lived
  # kubeconfig); when it is taken, another free port is used instead.
  local wanted=${BERTH_CLUSTER_API_PORT:-}
  for try in 1 2 3; do
    if [ -n "$wanted" ] && [ "$try" -eq 1 ]; then API_PORT=$wanted; else API_PORT=$(free_port); fi
    API="https://127.0.0.1:$API_PORT"
    start kube-apiserver "$DIR/kube-apiserver.log" "$BIN/kube-apiserver" \
      --etcd-servers="http://127.0.0.1:$ETCD_PORT" --etcd-prefix=/registry \
      --bind-address=127.0.0.1 --secure-port="$API_PORT" \
      --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
      --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
      --client-ca-file="$DIR/pki/ca.crt" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$DIR/pki/sa.pub" --service-account-signing-key-file="$DIR/pki/sa.key" \
      --authorization-mode=Node,RBAC --allow-privileged=true \
      --service-cluster-ip-range=10.96.0.0/16 \
      --enable-admission-plugins=PodSecurity \
      --max-requests-inflight=0 --max-mutating-requests-inflight=0 --enable-priority-and-fairness=false
    if wait_ready kube-apiserver "$PID_kube_apiserver" 180 kcurl "$API/readyz"; then return 0; fi
    grep -q "address already in use" "$DIR/kube-apiserver.log" || return 1
    log "kube-apiserver: port taken, retrying on a new port"
  done
  return 1
}

start_secure_component() { # name binary extra-args...
  local name=$1 bin=$2 try port var; shift 2
  var="PID_${name//-/_}"
  for try in 1 2 3; do
    port=$(free_port)
    start "$name" "$DIR/$name.log" "$BIN/$bin" --kubeconfig="$DIR/kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$port" \
      --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
      --leader-elect=false "$@"
    if wait_ready "$name" "${!var}" 60 curl -fsSk "https://127.0.0.1:$port/healthz"; then return 0; fi
    grep -q "address already in use" "$DIR/$name.log" || return 1
    log "$name: port taken, retrying on a new port"
  done
  return 1
}

# kwok's volume stages (kustomize/stage/volume/fast in its module source) are
# its dynamic provisioner. A cache built before they were used may lack them:
# copy them in from the Go module cache (no build, no cache key change).
ensure_volume_stages() {
  local dst=$BIN/kwok-stage/volume src tmp
  [ -s "$dst/fast/kustomization.yaml" ] && return 0
  log "copying kwok's volume stages into $BIN"
  src=$(GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -s "$src/kustomize/stage/volume/fast/kustomization.yaml" ] || die "kwok volume stages not found in ${src:-the Go module cache}"
  tmp=$(mktemp -d "$BIN/kwok-stage/.volume.XXXXXX")
  chmod 755 "$tmp"
  cp -r "$src/kustomize/stage/volume/." "$tmp/"
  chmod -R u+w "$tmp"
  mv -T "$tmp" "$dst" 2>/dev/null || rm -rf "$tmp" # another `up` won the race
  [ -s "$dst/fast/kustomization.yaml" ] || die "could not put kwok's volume stages into $dst"
}

# kwok's stages serve only the class named `kwok-volume`. This overlay, built
# by kwok's own kustomize loader, keeps kwok's stages and changes only their
# selectors. The `test` ops make a changed upstream selector fail `up` loudly
# (kwok exits on a config error).
# - Claims of `standard` and `standard-wffc` are provisioned; a
#   `standard-wffc` claim only once the scheduler has picked its Pod's node
#   (the annotation volume.kubernetes.io/selected-node). kwok's own stage
#   ignores WaitForFirstConsumer and would provision at once.
# - No claim larger than $VOLUME_MAX is provisioned: it stays Pending, as it
#   did when the largest pre-created PV was 20Gi.
# - kwok replays a stage for stale events; a claim already marked
#   bind-completed is skipped, which halves the replays.
# - PVs are marked Bound / deleted only when kwok provisioned them.
# - kwok's pvc-delete stage is dropped: it marks the PV Released as soon as
#   the claim has a deletionTimestamp, even while a Pod still holds the claim
#   (pvc-protection). KCM's PV controller releases the PV when the claim is
#   really gone, and pv-delete then removes it.
write_volume_stages() {
  local VOLUME_MAX=${BERTH_TEST_VOLUME_MAX:-20Gi}
  [[ $VOLUME_MAX =~ ^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$ ]] || die "BERTH_TEST_VOLUME_MAX=$VOLUME_MAX is not a quantity"
  local out=$DIR/kwok-volume upstream="self.spec.storageClassName == 'kwok-volume'"
  local claim="has(self.spec.storageClassName) && self.spec.storageClassName in ['standard', 'standard-wffc']"
  local ours="has(self.metadata.annotations) && 'pv.kubernetes.io/provisioned-by' in self.metadata.annotations && self.metadata.annotations['pv.kubernetes.io/provisioned-by'] == 'kwok.x-k8s.io/volume'"
  mkdir -p "$out"
  # kustomize refuses an absolute path to another kustomization.
  local base
  base=$(realpath --relative-to="$out" "$BIN/kwok-stage/volume/fast")
  cat >"$out/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $base
patches:
- target: {kind: Stage, name: pvc-provision}
  patch: |-
    - {op: test, path: /spec/selector/matchExpressions/0/cel/expression, value: "$upstream"}
    - {op: replace, path: /spec/selector/matchExpressions/0/cel/expression, value: "$claim"}
    - op: add
      path: /spec/selector/matchExpressions/-
      value: {cel: {expression: "!has(self.metadata.annotations) || !('pv.kubernetes.io/bind-completed' in self.metadata.annotations)"}}
    - op: add
      path: /spec/selector/matchExpressions/-
      value: {cel: {expression: "self.spec.storageClassName != 'standard-wffc' || (has(self.metadata.annotations) && 'volume.kubernetes.io/selected-node' in self.metadata.annotations)"}}
    - op: add
      path: /spec/selector/matchExpressions/-
      value: {cel: {expression: "Quantity(self.spec.resources.requests.storage) <= Quantity('$VOLUME_MAX')"}}
- target: {kind: Stage, name: pv-bind}
  patch: |-
    - {op: test, path: /spec/selector/matchExpressions/0/cel/expression, value: "$upstream"}
    - {op: replace, path: /spec/selector/matchExpressions/0/cel/expression, value: "$ours"}
- target: {kind: Stage, name: pv-delete}
  patch: |-
    - {op: test, path: /spec/selector/matchExpressions/0/cel/expression, value: "$upstream"}
    - {op: replace, path: /spec/selector/matchExpressions/0/cel/expression, value: "$ours"}
- target: {kind: Stage, name: pvc-delete}
  patch: |-
    \$patch: delete
    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Stage
    metadata: {name: pvc-delete}
EOF
}

start_kwok() {
  local try
  ensure_volume_stages
  write_volume_stages
  # kwok reads ~/.kwok/kwok.yaml when present; give it a HOME of its own.
  mkdir -p "$DIR/kwok-home" "$DIR/logs"
  # Every container of every Pod gets this file as its log (CRI format), so
  # `GET pods/log` returns real lines through apiserver -> kwok.
  local ts
  ts=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  for i in 1 2 3 4 5; do echo "$ts stdout F berth-test log line $i"; done >"$DIR/logs/container.log"
  cat >"$DIR/kwok-logs.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: all-containers}
spec:
  selector: {}
  logs: [{logsFile: $DIR/logs/container.log, follow: false}]
EOF
  for try in 1 2 3; do
    KWOK_PORT=$(free_port)
    start kwok "$DIR/kwok.log" env HOME="$DIR/kwok-home" "$BIN/kwok" --kubeconfig="$DIR/kubeconfig" \
      --config="$BIN/kwok-stage/fast" --config="$DIR/kwok-volume" --config="$DIR/kwok-logs.yaml" \
      --manage-all-nodes=true --cidr="${BERTH_TEST_POD_CIDR:-127.1.0.0/16}" \
      --node-name=localhost --node-port="$KWOK_PORT" --server-address="127.0.0.1:$KWOK_PORT" \
      --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
      --node-lease-duration-seconds=40 ${BERTH_TEST_KWOK_EXTRA_ARGS:-}
    if wait_ready kwok "$PID_kwok" 60 curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"; then return 0; fi
    grep -q "address already in use" "$DIR/kwok.log" || return 1
    log "kwok: port taken, retrying on a new port"
  done
  return 1
}

# Room for 2,000 of Berth's Pods on any one node (the test policy sends every
# session to kwok-node-1): a session Pod requests up to 1.5 cpu, 3Gi memory
# and 2Gi ephemeral-storage.
NODE_RESOURCES='"cpu":"4000","memory":"8Ti","pods":"3000","ephemeral-storage":"8Ti"'
node_json() { # name labels-json taints-json
  cat <<EOF
{"apiVersion":"v1","kind":"Node","metadata":{"name":"$1","annotations":{"node.alpha.kubernetes.io/ttl":"0","kwok.x-k8s.io/node":"fake"},
 "labels":$2},
 "spec":{"taints":$3},
 "status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":"localhost"}],
  "allocatable":{$NODE_RESOURCES},
  "capacity":{$NODE_RESOURCES}}}
EOF
}

seed_objects() {
  local base='"kubernetes.io/arch":"amd64","kubernetes.io/os":"linux","type":"kwok"'
  # node-0 plain, node-1 labelled (scheduling plugins select it), node-2 tainted.
  api POST /api/v1/nodes "$(node_json kwok-node-0 "{$base,\"kubernetes.io/hostname\":\"kwok-node-0\"}" '[]')" >/dev/null
  api POST /api/v1/nodes "$(node_json kwok-node-1 "{$base,\"kubernetes.io/hostname\":\"kwok-node-1\",\"berth.test/pool\":\"sandbox\"}" '[]')" >/dev/null
  api POST /api/v1/nodes "$(node_json kwok-node-2 "{$base,\"kubernetes.io/hostname\":\"kwok-node-2\",\"berth.test/pool\":\"dedicated\"}" '[{"key":"berth.test/dedicated","value":"sandbox","effect":"NoSchedule"}]')" >/dev/null

  # kwok's volume stages (write_volume_stages) provision a PV for every claim
  # of these classes and delete it with the claim.
  local class mode default
  for class in standard standard-wffc; do
    if [ "$class" = standard ]; then mode=Immediate default=true; else mode=WaitForFirstConsumer default=false; fi
    api POST /apis/storage.k8s.io/v1/storageclasses "{\"apiVersion\":\"storage.k8s.io/v1\",\"kind\":\"StorageClass\",\"metadata\":{\"name\":\"$class\",\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"$default\"}},\"provisioner\":\"kwok.x-k8s.io/volume\",\"volumeBindingMode\":\"$mode\",\"reclaimPolicy\":\"Delete\",\"allowVolumeExpansion\":true}" >/dev/null
  done

  # `bay` is Bay's default namespace, used by tests/local-berth.sh.
  local ns
  for ns in berth-plain bay; do
    api POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}" >/dev/null
  done
  api POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"berth-restricted","labels":{"pod-security.kubernetes.io/enforce":"restricted","pod-security.kubernetes.io/enforce-version":"latest","pod-security.kubernetes.io/warn":"restricted","pod-security.kubernetes.io/warn-version":"latest"}}}' >/dev/null
}

nodes_ready() {
  local out
  out=$(api GET /api/v1/nodes) || return 1
  python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
ok = len(items) >= 3 and all(
    any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
    and not any(t["key"].startswith("node.kubernetes.io/") for t in n.get("spec", {}).get("taints", []) or [])
    for n in items)
sys.exit(0 if ok else 1)' <<<"$out"
}

http_code() { curl -sS -o /dev/null -w '%{http_code}' --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$API$1"; }

pv_gone() { [ "$(http_code "/api/v1/persistentvolumes/$1")" = 404 ]; }

claim_bound() { # namespace name: Bound to a PV, whose name goes to $DIR/probe-pv
  api GET "/api/v1/namespaces/$1/persistentvolumeclaims/$2" | python3 -c '
import json, sys
c = json.load(sys.stdin)
ok = c.get("status", {}).get("phase") == "Bound" and c["spec"].get("volumeName")
if ok:
    print(c["spec"]["volumeName"])
sys.exit(0 if ok else 1)' >"$DIR/probe-pv"
}

# The provisioner works end to end: a claim with no class gets the default
# class, a PV, and is Bound; deleting it removes the PV.
check_provisioner() {
  local ns=berth-up-check pv
  api POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}" >/dev/null
  api POST "/api/v1/namespaces/$ns/persistentvolumeclaims" '{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"probe"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}' >/dev/null
  if ! wait_until 30 "a probe claim to bind" claim_bound "$ns" probe; then
    tail -n 20 "$DIR/kwok.log" >&2
    die "the volume provisioner does not work"
  fi
  pv=$(cat "$DIR/probe-pv"); rm -f "$DIR/probe-pv"
  api DELETE "/api/v1/namespaces/$ns/persistentvolumeclaims/probe" >/dev/null
  wait_until 30 "PersistentVolume $pv to be deleted with its claim" pv_gone "$pv" ||
    die "the volume provisioner does not delete PersistentVolumes"
  api DELETE "/api/v1/namespaces/$ns" >/dev/null
}

default_sa_ready() {
  api GET /api/v1/namespaces/default/serviceaccounts/default >/dev/null &&
    api GET /api/v1/namespaces/berth-plain/serviceaccounts/default >/dev/null &&
    api GET /api/v1/namespaces/berth-restricted/serviceaccounts/default >/dev/null
}

wait_until() { # timeout description check...
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.3
  done
}

stop_all() {
  [ -f "$(PIDS_FILE)" ] || return 0
  local name pid
  # Reverse start order; kwok first so nothing keeps writing status.
  tac "$(PIDS_FILE)" | while read -r name pid; do
    alive "$pid" && kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 10))
  while read -r name pid; do
    while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if alive "$pid"; then
      log "$name ($pid) ignored SIGTERM; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      local until=$((SECONDS + 5))
      while alive "$pid" && [ $SECONDS -lt $until ]; do sleep 0.1; done
    fi
  done <"$(PIDS_FILE)"
  rm -f "$(PIDS_FILE)"
}

cmd_down() {
  if [ -d "$DIR" ]; then
    stop_all
    rm -rf "$DIR"
    log "cluster in $DIR stopped and removed"
  fi
}

cmd_up() {
  local t0=$SECONDS
  cmd_build
  [ -x "$BIN/kube-apiserver" ] || die "binaries missing in $BIN"
  # A stale dir from a crashed run is never reused: its processes are stopped
  # and its state (etcd data, certificates) thrown away.
  if [ -e "$DIR" ]; then
    log "removing stale cluster dir $DIR"
    cmd_down
  fi
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  : >"$(PIDS_FILE)"
  # Any exit before the end of `up` (die, a failed command) stops what was
  # started: a failed `up` leaves no process behind.
  trap 'log "start-up failed; stopping what was started"; stop_all' EXIT
  make_pki
  start_etcd || die "etcd did not start"
  start_apiserver || die "kube-apiserver did not start"
  write_kubeconfig
  # The default client rate limits (KCM 20 QPS, scheduler 50) throttle the
  # PV controller and pod binding once hundreds of claims and Pods come and go.
  start_secure_component kube-controller-manager kube-controller-manager \
    --root-ca-file="$DIR/pki/ca.crt" --service-account-private-key-file="$DIR/pki/sa.key" \
    --controllers='*' --use-service-account-credentials=false \
    --kube-api-qps=200 --kube-api-burst=400 || die "kube-controller-manager did not start"
  start_secure_component kube-scheduler kube-scheduler \
    --kube-api-qps=200 --kube-api-burst=400 || die "kube-scheduler did not start"
  start_kwok || die "kwok did not start"
  seed_objects
  check_provisioner
  wait_until 90 "fake nodes Ready and untainted" nodes_ready || die "nodes not ready"
  wait_until 60 "default ServiceAccounts" default_sa_ready || die "service accounts not created"
  trap - EXIT
  cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
BERTH_TEST_KUBECONFIG=$DIR/kubeconfig
BERTH_TEST_CLUSTER_DIR=$DIR
BERTH_TEST_LOG_FILE=$DIR/logs/container.log
EOF
  log "cluster ready in $((SECONDS - t0))s: kubeconfig $DIR/kubeconfig (api $API)"
  echo "$DIR/kubeconfig"
}

lifecycle_main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    *) echo "usage: $0 build | up [DIR] | down [DIR] | replace-list VERSION" >&2; exit 2 ;;
  esac
}
