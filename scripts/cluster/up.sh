#!/usr/bin/env bash
# Start a local Kubernetes cluster for tests, every packet on this machine:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler on 127.0.0.1, KWOK with fake nodes
#   (tainted, so only pods of namespaces that ask for them land there: Running + Ready without a
#   kubelet), and one real node (node-up.sh: containerd, kubelet, kube-proxy, CoreDNS on the pod
#   bridge ferryman0; FERRYMAN_REAL_NODE=0 leaves it out, and the KWOK nodes untainted),
# then install the upstream CRDs (fetched from their Go modules by crds.sh).
#
# Usage: bash scripts/cluster/up.sh [RUN_DIR]     (default: <repo>/.cache/cluster)
# Writes RUN_DIR/kubeconfig (cluster-admin), RUN_DIR/cluster.env, RUN_DIR/env.sh (`source` it: the
# cluster's kubectl and helm first on PATH, KUBECONFIG set), pid files and logs. Prints the kubeconfig
# path on stdout and the `source` line last on stderr.
# Stop with: bash scripts/cluster/down.sh [RUN_DIR]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/env.sh
source "${HERE}/env.sh"
# shellcheck source=SCRIPTDIR/node-lib.sh
source "${HERE}/node-lib.sh"

RUN_DIR="${1:-${FERRYMAN_REPO_ROOT}/.cache/cluster}"
mkdir -p "${RUN_DIR}"
RUN_DIR="$(cd "${RUN_DIR}" && pwd)"
MARKER="${RUN_DIR}/.ferryman-cluster"
PKI="${RUN_DIR}/pki"
LOGS="${RUN_DIR}/logs"
PIDS="${RUN_DIR}/pids"
KUBECONFIG_ADMIN="${RUN_DIR}/kubeconfig"
BIN="${FERRYMAN_K8S_BIN}"
: "${FERRYMAN_CLUSTER_NODES:=2}"
: "${FERRYMAN_CLUSTER_TIMEOUT:=120}"
: "${FERRYMAN_REAL_NODE:=1}"
# Seconds to wait for another run dir's real node to go away (one per machine) before failing.
: "${FERRYMAN_REAL_NODE_WAIT:=0}"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
# KWOK's fake pod IPs (never routed); the real node's pods use FERRYMAN_NODE_POD_CIDR on the bridge.
POD_CIDR="10.244.0.0/16"

# print_source_line: the line a user runs to get this cluster's kubectl, helm and KUBECONFIG.
print_source_line() {
  cluster_log "use it in a shell with:"
  printf 'source %q\n' "${RUN_DIR}/env.sh" >&2
}

# --- an already running cluster in RUN_DIR is reused -------------------------------------

all_running() {
  local name pid
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    [[ -f "${PIDS}/${name}.pid" ]] || return 1
    pid="$(<"${PIDS}/${name}.pid")"
    kill -0 "${pid}" 2>/dev/null || return 1
  done
  if grep -qx 'REAL_NODE=1' "${RUN_DIR}/cluster.env" 2>/dev/null; then
    node_paths "${RUN_DIR}"
    for name in "${NODE_PROCESSES[@]}"; do
      node_pid_ours "${RUN_DIR}" "${name}" >/dev/null || return 1
    done
  fi
}

if [[ -f "${MARKER}" ]]; then
  if all_running && "${BIN}/kubectl" --kubeconfig "${KUBECONFIG_ADMIN}" get --raw=/readyz >/dev/null 2>&1; then
    cluster_log "cluster already running in ${RUN_DIR}"
    echo "${KUBECONFIG_ADMIN}"
    print_source_line
    exit 0
  fi
  cluster_log "stale control plane state in ${RUN_DIR}; cleaning it up"
  bash "${HERE}/down.sh" "${RUN_DIR}"
  mkdir -p "${RUN_DIR}"
elif [[ -n "$(ls -A "${RUN_DIR}")" ]]; then
  cluster_die "${RUN_DIR} is not empty and was not made by up.sh; refusing to use it"
fi

# The real node needs root and is one per machine: say so before building or starting anything.
if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  [[ "$(id -u)" == 0 ]] ||
    cluster_die "the real node needs root (bridge, iptables, mounts, cgroups); run as root or set FERRYMAN_REAL_NODE=0"
  wait_deadline=$((SECONDS + FERRYMAN_REAL_NODE_WAIT))
  next_note=${SECONDS}
  while [[ -f "${NODE_OWNER}" ]]; do
    owner="$(<"${NODE_OWNER}" 2>/dev/null)" || break
    [[ "${owner}" != "${RUN_DIR}" ]] && node_active "${owner}" || break
    if ((SECONDS >= wait_deadline)); then
      cluster_die "a real node already runs on this machine for ${owner} (one per machine): stop it with
  bash scripts/cluster/down.sh ${owner}
or reuse that cluster (FERRYMAN_CLUSTER_RUN_DIR=${owner} for the tests), start this one without a node
(FERRYMAN_REAL_NODE=0), or wait for it (FERRYMAN_REAL_NODE_WAIT=<seconds>)"
    fi
    if ((SECONDS >= next_note)); then
      cluster_log "waiting for the real node of ${owner} to go away (one per machine; up to $((wait_deadline - SECONDS))s more)"
      next_note=$((SECONDS + 30))
    fi
    sleep 2
  done
fi

# --- binaries ------------------------------------------------------------------------------

bash "${HERE}/build.sh"
if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  bash "${HERE}/node-build.sh" >/dev/null || cluster_die "building the real node's parts failed (scripts/cluster/node-build.sh)"
fi
command -v openssl >/dev/null 2>&1 || cluster_die "openssl is needed to make the cluster certificates"

touch "${MARKER}"
mkdir -p "${PKI}" "${LOGS}" "${PIDS}" "${RUN_DIR}/etcd-data"
chmod 700 "${RUN_DIR}/etcd-data" "${PKI}"

UP_OK=0
on_exit() {
  if [[ "${UP_OK}" != 1 ]]; then
    local f
    for f in "${LOGS}"/*.log; do
      [[ -f "${f}" ]] || continue
      echo "----- last lines of ${f}" >&2
      tail -n 15 "${f}" >&2 || true
    done
    cluster_log "start-up failed; stopping what was started (logs kept in ${LOGS})"
    FERRYMAN_CLUSTER_KEEP=1 bash "${HERE}/down.sh" "${RUN_DIR}" || true
  fi
}
trap on_exit EXIT

# --- free loopback ports -------------------------------------------------------------------

read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT CM_PORT SCHED_PORT KWOK_PORT < <(
  python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# --- certificates --------------------------------------------------------------------------

cluster_log "generating certificates in ${PKI}"
(
  cd "${PKI}"
  openssl_q() { openssl "$@" 2>/dev/null; }
  openssl_q req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
    -subj "/CN=ferryman-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"

  # sign NAME SUBJECT EXTENSIONS
  sign() {
    local name="$1" subject="$2" ext="$3"
    openssl_q req -newkey rsa:2048 -nodes -keyout "${name}.key" -out "${name}.csr" -subj "${subject}"
    printf '%s\n' "${ext}" >"${name}.ext"
    openssl_q x509 -req -in "${name}.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile "${name}.ext" -out "${name}.crt"
    rm -f "${name}.csr" "${name}.ext"
  }
  client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  apiserver_ips="IP:127.0.0.1,IP:${SERVICE_IP}"
  [[ "${FERRYMAN_REAL_NODE}" == 1 ]] && apiserver_ips+=",IP:${FERRYMAN_NODE_IP}"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${apiserver_ips},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=ferryman-admin" "${client_ext}"
  sign controller-manager "/CN=system:kube-controller-manager" "${client_ext}"
  sign scheduler "/CN=system:kube-scheduler" "${client_ext}"
  sign kwok "/O=system:masters/CN=kwok-controller" "${client_ext}"
  # Front proxy (aggregation layer) CA and the apiserver's client certificate for it, so the
  # extension-apiserver-authentication ConfigMap is complete (as kubeadm sets it up).
  openssl_q req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout front-proxy-ca.key \
    -out front-proxy-ca.crt -subj "/CN=ferryman-front-proxy-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  openssl_q req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
    -subj "/CN=front-proxy-client"
  printf '%s\n' "${client_ext}" >front-proxy-client.ext
  openssl_q x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -CAcreateserial -sha256 -days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt
  rm -f front-proxy-client.csr front-proxy-client.ext
  # ServiceAccount token signing key pair.
  openssl_q genrsa -out sa.key 2048
  openssl_q rsa -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
) || cluster_die "certificate generation with openssl failed"
if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  bash "${HERE}/node-pki.sh" "${PKI}" || cluster_die "making the real node's certificates failed"
fi

# write_kubeconfig FILE CERT_NAME USER
write_kubeconfig() {
  local file="$1" cert="$2" user="$3"
  local k=("${BIN}/kubectl" --kubeconfig "${file}")
  "${k[@]}" config set-cluster ferryman --server="https://127.0.0.1:${APISERVER_PORT}" \
    --certificate-authority="${PKI}/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials "${user}" --client-certificate="${PKI}/${cert}.crt" \
    --client-key="${PKI}/${cert}.key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context ferryman --cluster=ferryman --user="${user}" >/dev/null
  "${k[@]}" config use-context ferryman >/dev/null
  chmod 600 "${file}"
}
write_kubeconfig "${KUBECONFIG_ADMIN}" admin ferryman-admin
write_kubeconfig "${RUN_DIR}/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
write_kubeconfig "${RUN_DIR}/scheduler.kubeconfig" scheduler system:kube-scheduler
write_kubeconfig "${RUN_DIR}/kwok.kubeconfig" kwok kwok-controller

KUBECTL=("${BIN}/kubectl" --kubeconfig "${KUBECONFIG_ADMIN}")

# --- processes -----------------------------------------------------------------------------

# start NAME COMMAND...: run in its own session, detached from our stdio, log to LOGS/NAME.log.
start() {
  local name="$1"
  shift
  cluster_log "starting ${name}"
  setsid "$@" </dev/null >"${LOGS}/${name}.log" 2>&1 &
  echo "$!" >"${PIDS}/${name}.pid"
}

alive() {
  local pid
  pid="$(<"${PIDS}/$1.pid")"
  kill -0 "${pid}" 2>/dev/null || cluster_die "$1 exited; see ${LOGS}/$1.log"
}

# wait_for WHAT COMMAND...: poll COMMAND until it succeeds, checking the processes stay up.
wait_for() {
  local what="$1" deadline=$((SECONDS + FERRYMAN_CLUSTER_TIMEOUT)) name
  shift
  until "$@" >/dev/null 2>&1; do
    for name in "${STARTED[@]}"; do
      alive "${name}"
    done
    ((SECONDS < deadline)) || cluster_die "timed out after ${FERRYMAN_CLUSTER_TIMEOUT}s waiting for ${what}"
    sleep 0.5
  done
  cluster_log "${what}: ok"
}

# url_ok URL: GET URL answers 200 (TLS not verified: only used for local health endpoints).
url_ok() {
  python3 - "$1" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

STARTED=()

start etcd "${BIN}/etcd" \
  --name=ferryman \
  --data-dir="${RUN_DIR}/etcd-data" \
  --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster="ferryman=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --max-request-bytes=8388608 \
  --quota-backend-bytes=4294967296 \
  --unsafe-no-fsync=true \
  --log-level=warn
STARTED+=(etcd)
wait_for "etcd health" url_ok "http://127.0.0.1:${ETCD_PORT}/health"

if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  # Pods reach the apiserver through the `kubernetes` Service, whose endpoint is the bridge address
  # (kept up to date by the endpoint reconciler); it verifies the kubelet's serving certificate and
  # calls the kubelet API (logs, exec) under a certificate bound to system:kubelet-api-admin.
  APISERVER_NET_FLAGS=(
    --advertise-address="${FERRYMAN_NODE_IP}"
    --bind-address=0.0.0.0
    --kubelet-certificate-authority="${PKI}/ca.crt"
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt"
    --kubelet-client-key="${PKI}/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types=InternalIP,Hostname
  )
else
  # A loopback address is not a valid endpoint: the `kubernetes` Service has none in this mode.
  APISERVER_NET_FLAGS=(--advertise-address=127.0.0.1 --bind-address=127.0.0.1 --endpoint-reconciler-type=none)
fi
start kube-apiserver "${BIN}/kube-apiserver" \
  "${APISERVER_NET_FLAGS[@]}" \
  --secure-port="${APISERVER_PORT}" \
  --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
  --cert-dir="${PKI}" \
  --tls-cert-file="${PKI}/apiserver.crt" \
  --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/ca.crt" \
  --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="${PKI}/front-proxy-client.crt" \
  --proxy-client-key-file="${PKI}/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction \
  --service-cluster-ip-range="${SERVICE_CIDR}" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${PKI}/sa.pub" \
  --service-account-signing-key-file="${PKI}/sa.key" \
  --allow-privileged=true \
  --profiling=false \
  --v=1
STARTED+=(kube-apiserver)
wait_for "kube-apiserver /readyz" "${KUBECTL[@]}" get --raw=/readyz

start kube-controller-manager "${BIN}/kube-controller-manager" \
  --kubeconfig="${RUN_DIR}/controller-manager.kubeconfig" \
  --authentication-kubeconfig="${RUN_DIR}/controller-manager.kubeconfig" \
  --authorization-kubeconfig="${RUN_DIR}/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="${CM_PORT}" \
  --leader-elect=false \
  --cluster-name=ferryman \
  --service-account-private-key-file="${PKI}/sa.key" \
  --root-ca-file="${PKI}/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="${PKI}/ca.crt" \
  --cluster-signing-key-file="${PKI}/ca.key" \
  --profiling=false \
  --v=1
STARTED+=(kube-controller-manager)

start kube-scheduler "${BIN}/kube-scheduler" \
  --kubeconfig="${RUN_DIR}/scheduler.kubeconfig" \
  --authentication-kubeconfig="${RUN_DIR}/scheduler.kubeconfig" \
  --authorization-kubeconfig="${RUN_DIR}/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="${SCHED_PORT}" \
  --leader-elect=false \
  --profiling=false \
  --v=1
STARTED+=(kube-scheduler)

start kwok "${BIN}/kwok" \
  --kubeconfig="${RUN_DIR}/kwok.kubeconfig" \
  --config="${BIN}/kwok-stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 \
  --cidr="${POD_CIDR}" \
  --node-ip=127.0.0.1 \
  --server-address="127.0.0.1:${KWOK_PORT}"
STARTED+=(kwok)

wait_for "kube-controller-manager /healthz" url_ok "https://127.0.0.1:${CM_PORT}/healthz"
wait_for "kube-scheduler /healthz" url_ok "https://127.0.0.1:${SCHED_PORT}/healthz"

cat >"${RUN_DIR}/cluster.env" <<EOF
KUBECONFIG=${KUBECONFIG_ADMIN}
FERRYMAN_K8S_BIN=${BIN}
FERRYMAN_K8S_VERSION=${FERRYMAN_K8S_VERSION}
FERRYMAN_ETCD_VERSION=${FERRYMAN_ETCD_VERSION}
FERRYMAN_KWOK_VERSION=${FERRYMAN_KWOK_VERSION}
APISERVER_URL=https://127.0.0.1:${APISERVER_PORT}
ETCD_URL=http://127.0.0.1:${ETCD_PORT}
SERVICE_CIDR=${SERVICE_CIDR}
KWOK_POD_CIDR=${POD_CIDR}
REAL_NODE=${FERRYMAN_REAL_NODE}
EOF

# --- fake nodes ----------------------------------------------------------------------------

cluster_log "creating ${FERRYMAN_CLUSTER_NODES} fake node(s)"
# With a real node, the fake ones are tainted kwok.x-k8s.io/node=fake:NoSchedule: pods land there
# only from namespaces whose scheduler.alpha.kubernetes.io/{node-selector,defaultTolerations}
# annotations ask for them (tests/cluster/controlplane.py: namespace_manifest(on="kwok")).
KWOK_TAINTS="[]"
if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  KWOK_TAINTS="[{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]"
fi
for ((i = 0; i < FERRYMAN_CLUSTER_NODES; i++)); do
  "${KUBECTL[@]}" apply --server-side --field-manager=ferryman-up -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-${i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-${i}
    node-role.kubernetes.io/agent: ""
    type: kwok
    topology.kubernetes.io/zone: zone-${i}
spec:
  taints: ${KWOK_TAINTS}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
EOF
done
# fake_nodes_ready: every fake node reports Ready (one list call; `kubectl wait --all` waits node by
# node and could not see 20+ nodes Ready within its timeout).
fake_nodes_ready() {
  local ready
  ready="$("${KUBECTL[@]}" get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -cx True)"
  [[ "${ready}" -ge "${FERRYMAN_CLUSTER_NODES}" ]]
}
wait_for "fake nodes Ready" fake_nodes_ready
wait_for "default ServiceAccount (controller-manager)" "${KUBECTL[@]}" -n default get serviceaccount default

# --- the real node ------------------------------------------------------------------------

if [[ "${FERRYMAN_REAL_NODE}" == 1 ]]; then
  bash "${HERE}/node-up.sh" "${RUN_DIR}" || cluster_die "the real node did not start (see above; FERRYMAN_REAL_NODE=0 skips it)"
fi

# --- upstream CRDs -------------------------------------------------------------------------

# From their projects' Go modules at the versions in env.sh (crds.sh; quick once fetched).
UPSTREAM_CRDS="$(bash "${HERE}/crds.sh")" || cluster_die "fetching the upstream CRDs failed (scripts/cluster/crds.sh)"
cluster_log "installing upstream CRDs from ${UPSTREAM_CRDS}"
# Server-side apply: client-side apply's last-applied annotation is too big for the
# InferenceService CRD (~1.9 MB of YAML).
"${KUBECTL[@]}" apply --server-side --force-conflicts --field-manager=ferryman-up \
  -f "${UPSTREAM_CRDS}" >/dev/null
wait_for "CRDs Established" "${KUBECTL[@]}" wait --for=condition=Established \
  -f "${UPSTREAM_CRDS}" --timeout=5s

UP_OK=1
cluster_log "control plane ready (Kubernetes ${FERRYMAN_K8S_VERSION}) at https://127.0.0.1:${APISERVER_PORT}"
mkdir -p "${RUN_DIR}/bin"
ln -sf "${BIN}/kubectl" "${RUN_DIR}/bin/kubectl"
ln -sf "${BIN}/helm" "${RUN_DIR}/bin/helm"
{
  echo "# Generated by scripts/cluster/up.sh: source it to use this cluster from a shell."
  printf 'export PATH=%q:"${PATH}"\n' "${RUN_DIR}/bin"
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_ADMIN}"
  printf 'export FERRYMAN_K8S_BIN=%q\n' "${BIN}"
  printf 'export FERRYMAN_CLUSTER_RUN_DIR=%q\n' "${RUN_DIR}"
} >"${RUN_DIR}/env.sh"
echo "${KUBECONFIG_ADMIN}"
print_source_line
