#!/usr/bin/env bash
# Start the real node of the test cluster in RUN_DIR (called by up.sh once the control plane runs):
#   the pod bridge (the node IP), containerd (+ the local pause and probe images), CoreDNS on the
#   bridge address, kube-proxy (iptables) and kubelet, each under its own client certificate;
# then waits until the node is Ready and CoreDNS answers, and appends the node's facts to
# RUN_DIR/cluster.env. One real node per machine: refuses while another run dir's node is active.
#
# Usage: bash scripts/cluster/node-up.sh RUN_DIR      (stop with node-down.sh RUN_DIR, or down.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/env.sh
source "${HERE}/env.sh"
# shellcheck source=SCRIPTDIR/node-lib.sh
source "${HERE}/node-lib.sh"

RUN_DIR="$(cd "${1:?usage: node-up.sh RUN_DIR}" && pwd)"
[[ -f "${RUN_DIR}/.ferryman-cluster" && -f "${RUN_DIR}/cluster.env" ]] ||
  cluster_die "${RUN_DIR} has no running control plane (start it with up.sh)"
node_paths "${RUN_DIR}"
APISERVER_URL="$(sed -n 's/^APISERVER_URL=//p' "${RUN_DIR}/cluster.env")"
SERVICE_CIDR="$(sed -n 's/^SERVICE_CIDR=//p' "${RUN_DIR}/cluster.env")"
[[ -n "${APISERVER_URL}" && -n "${SERVICE_CIDR}" ]] || cluster_die "${RUN_DIR}/cluster.env lacks APISERVER_URL or SERVICE_CIDR"
BIN="${FERRYMAN_K8S_BIN}"
KUBECTL=("${BIN}/kubectl" --kubeconfig "${RUN_DIR}/kubeconfig")
: "${FERRYMAN_CLUSTER_TIMEOUT:=120}"
NODE_START=${SECONDS}

# --- can this machine run the node? ----------------------------------------------------------

[[ "$(id -u)" == 0 ]] ||
  cluster_die "the real node needs root (bridge, iptables, mounts, cgroups); run as root or set FERRYMAN_REAL_NODE=0"
[[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] ||
  cluster_die "no cgroup file system at /sys/fs/cgroup: kubelet cannot run here"
command -v ip >/dev/null 2>&1 || cluster_die "ip (iproute2) is needed for the pod bridge"

mkdir -p "${FERRYMAN_NODE_RUN}"
exec 8>"${FERRYMAN_NODE_RUN}/.lock"
flock -w 30 8 || cluster_die "${FERRYMAN_NODE_RUN}/.lock is held by another node-up/node-down"
if [[ -f "${NODE_OWNER}" ]]; then
  owner="$(<"${NODE_OWNER}")"
  if [[ "${owner}" != "${RUN_DIR}" ]] && node_active "${owner}"; then
    cluster_die "a real node already runs on this machine for ${owner} (one per machine): stop it with
  bash scripts/cluster/down.sh ${owner}
or start this cluster without one (FERRYMAN_REAL_NODE=0)"
  fi
  cluster_log "node: cleaning up the leftovers of ${owner}'s node"
  flock -u 8
  bash "${HERE}/node-down.sh" --machine "${owner}" || cluster_die "could not clean up the old node state"
  flock -w 30 8 || cluster_die "${FERRYMAN_NODE_RUN}/.lock is held by another node-up/node-down"
fi
if ip link show "${FERRYMAN_NODE_BRIDGE}" >/dev/null 2>&1 || [[ -d "${FERRYMAN_NODE_STATE}" ]]; then
  # Leftovers of a node nobody owns any more (a machine that crashed, a killed script).
  cluster_log "node: removing the leftovers of an earlier node (${FERRYMAN_NODE_BRIDGE}, ${FERRYMAN_NODE_STATE})"
  flock -u 8
  bash "${HERE}/node-down.sh" "${RUN_DIR}" || cluster_die "could not clean up the old node state"
  flock -w 30 8 || cluster_die "${FERRYMAN_NODE_RUN}/.lock is held by another node-up/node-down"
fi
mkdir -p "${FERRYMAN_NODE_RUN}" "${FERRYMAN_NODE_STATE}"
echo "${RUN_DIR}" >"${NODE_OWNER}"

# --- parts -----------------------------------------------------------------------------------

PARTS="$(bash "${HERE}/node-build.sh")" || cluster_die "building the node parts failed (scripts/cluster/node-build.sh)"
eval "${PARTS}"
CTR="${NODE_CONTAINERD_DIR}/ctr"
mkdir -p "${NODE_DIR}" "${NODE_DIR}/cni" "${LOGS}" "${PIDS}"

# --- sysctls (saved once, restored by node-down.sh) and the bridge ---------------------------

if [[ ! -f "${NODE_SYSCTLS}" ]]; then
  for key in "${NODE_SYSCTL_KEYS[@]}"; do
    f="/proc/sys/${key//.//}"
    [[ -r "${f}" ]] && printf '%s=%s\n' "${key}" "$(<"${f}")"
  done >"${NODE_SYSCTLS}.tmp"
  mv "${NODE_SYSCTLS}.tmp" "${NODE_SYSCTLS}"
fi

# kubelet makes /var/log/containers (a fixed path) if missing; node-down.sh removes it again then.
[[ -d /var/log/containers ]] || touch "${FERRYMAN_NODE_RUN}/made-var-log-containers"

cluster_log "node: bridge ${FERRYMAN_NODE_BRIDGE} ${FERRYMAN_NODE_IP}/24, route ${SERVICE_CIDR} onto it"
echo "${SERVICE_CIDR}" >"${FERRYMAN_NODE_RUN}/service-cidr"
ip link add "${FERRYMAN_NODE_BRIDGE}" type bridge
ip addr add "${FERRYMAN_NODE_IP}/24" dev "${FERRYMAN_NODE_BRIDGE}"
ip link set "${FERRYMAN_NODE_BRIDGE}" up
ip route replace "${SERVICE_CIDR}" dev "${FERRYMAN_NODE_BRIDGE}" src "${FERRYMAN_NODE_IP}"
sysctl_set net.ipv4.ip_forward 1
# Bridged pod-to-pod traffic must pass iptables for ClusterIPs (kube-proxy's DNAT) to work.
sysctl_set net.bridge.bridge-nf-call-iptables 1
if [[ "$(iptables -S INPUT | head -n1)" != "-P INPUT ACCEPT" ]]; then
  # Pods talk to the host (CoreDNS, the apiserver's endpoint): let the bridge in.
  iptables -N FERRYMAN-NODE-INPUT
  iptables -A FERRYMAN-NODE-INPUT -i "${FERRYMAN_NODE_BRIDGE}" -j ACCEPT
  iptables -I INPUT 1 -j FERRYMAN-NODE-INPUT
fi

# --- configuration files ---------------------------------------------------------------------

# Pods see only the cluster DNS; the node's own resolv.conf (for pods with dnsPolicy Default) has
# no name server at all, so no query leaves the machine.
printf '# ferryman real node: no upstream name server (nothing leaves this machine)\noptions ndots:1\n' \
  >"${NODE_DIR}/resolv.conf"

cat >"${NODE_DIR}/cni/10-ferryman.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ferryman",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${FERRYMAN_NODE_BRIDGE}",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${FERRYMAN_NODE_STATE}/cni",
        "ranges": [[{"subnet": "${FERRYMAN_NODE_POD_CIDR}", "gateway": "${FERRYMAN_NODE_IP}"}]],
        "routes": [{"dst": "${SERVICE_CIDR}", "gw": "${FERRYMAN_NODE_IP}"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

cat >"${NODE_DIR}/containerd.toml" <<EOF
# ferryman real node: containerd ${FERRYMAN_CONTAINERD_VERSION} with its own root, state and socket.
version = 3
root = "${FERRYMAN_NODE_STATE}/containerd"
state = "${FERRYMAN_NODE_RUN}/containerd"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${NODE_CONTAINERD_SOCK}"

[plugins.'io.containerd.internal.v1.opt']
  path = "${FERRYMAN_NODE_STATE}/opt"

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "${FERRYMAN_NODE_STATE}/image-verifier"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${NODE_PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "${NODE_DIR}/cni"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

# write_node_kubeconfig NAME CERT USER
write_node_kubeconfig() {
  local file="${NODE_DIR}/$1.kubeconfig" cert="$2" user="$3"
  local k=("${BIN}/kubectl" --kubeconfig "${file}")
  "${k[@]}" config set-cluster ferryman --server="${APISERVER_URL}" \
    --certificate-authority="${PKI}/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials "${user}" --client-certificate="${PKI}/${cert}.crt" \
    --client-key="${PKI}/${cert}.key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context ferryman --cluster=ferryman --user="${user}" >/dev/null
  "${k[@]}" config use-context ferryman >/dev/null
  chmod 600 "${file}"
}
write_node_kubeconfig kubelet kubelet-client "system:node:${FERRYMAN_NODE_NAME}"
write_node_kubeconfig kube-proxy kube-proxy system:kube-proxy
write_node_kubeconfig coredns coredns ferryman:coredns

cat >"${NODE_DIR}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${FERRYMAN_NODE_IP}
port: ${NODE_KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${NODE_KUBELET_HEALTHZ_PORT}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${PKI}/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://${NODE_CONTAINERD_SOCK}
# cgroup v1 on these machines: kubelet >= 1.35 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
clusterDNS: [${FERRYMAN_NODE_IP}]
clusterDomain: cluster.local
resolvConf: ${NODE_DIR}/resolv.conf
podLogsDir: ${FERRYMAN_NODE_STATE}/pod-logs
registerNode: true
maxPods: 40
podPidsLimit: 4096
serializeImagePulls: false
# A full-ish shared disk must not evict the test pods or collect their (local, unpullable) images.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
protectKernelDefaults: false
staticPodPath: ""
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 10s
shutdownGracePeriod: 0s
EOF

cat >"${NODE_DIR}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${NODE_DIR}/kube-proxy.kubeconfig
hostnameOverride: ${FERRYMAN_NODE_NAME}
bindAddress: ${FERRYMAN_NODE_IP}
healthzBindAddress: 127.0.0.1:${NODE_PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:${NODE_PROXY_METRICS_PORT}
mode: iptables
clusterCIDR: ${FERRYMAN_NODE_POD_CIDR}
nodePortAddresses: [${FERRYMAN_NODE_IP}/32]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
  syncPeriod: 30s
  minSyncPeriod: 0s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

cat >"${NODE_DIR}/Corefile" <<EOF
# ferryman real node: cluster DNS on the bridge address; no forward plugin, so only cluster names
# resolve and no query leaves the machine.
.:53 {
    bind ${FERRYMAN_NODE_IP}
    errors
    health 127.0.0.1:${NODE_COREDNS_HEALTH_PORT}
    ready 127.0.0.1:${NODE_COREDNS_READY_PORT}
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${NODE_DIR}/coredns.kubeconfig ferryman
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loop
    loadbalance
}
EOF

# --- identities the node's components need beyond the default RBAC --------------------------

"${KUBECTL[@]}" apply --server-side --field-manager=ferryman-up -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ferryman:kubelet-api-admins
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "ferryman:kubelet-api-admins"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ferryman:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ferryman:coredns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "ferryman:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "ferryman:coredns"}
EOF

# --- processes -------------------------------------------------------------------------------

STARTED=()
# start NAME COMMAND...: its own session, logs in LOGS/NAME.log, pid in PIDS/NAME.pid.
start() {
  local name="$1"
  shift
  cluster_log "node: starting ${name}"
  # 8>&-: the node lock must not outlive this script in the daemons (node-down.sh takes it).
  setsid "$@" </dev/null >"${LOGS}/${name}.log" 2>&1 8>&- &
  echo "$!" >"${PIDS}/${name}.pid"
  STARTED+=("${name}")
}
wait_for() {
  local what="$1" deadline=$((SECONDS + FERRYMAN_CLUSTER_TIMEOUT)) name pid
  shift
  until "$@" >/dev/null 2>&1; do
    for name in "${STARTED[@]}"; do
      pid="$(<"${PIDS}/${name}.pid")"
      kill -0 "${pid}" 2>/dev/null || cluster_die "${name} exited; see ${LOGS}/${name}.log"
    done
    ((SECONDS < deadline)) || cluster_die "timed out after ${FERRYMAN_CLUSTER_TIMEOUT}s waiting for ${what}"
    sleep 0.3
  done
  cluster_log "node: ${what}: ok"
}

start containerd "${NODE_CONTAINERD_DIR}/containerd" --config "${NODE_DIR}/containerd.toml" --log-level warn
wait_for "containerd" "${CTR}" --address "${NODE_CONTAINERD_SOCK}" version
for archive in "${NODE_PAUSE_ARCHIVE}" "${NODE_PROBE_ARCHIVE}"; do
  "${CTR}" --address "${NODE_CONTAINERD_SOCK}" -n k8s.io images import --local "${archive}" >/dev/null ||
    cluster_die "ctr images import ${archive} failed"
done
cluster_log "node: imported ${NODE_PAUSE_IMAGE} (sandbox) and ${NODE_PROBE_IMAGE}"

start coredns "${NODE_COREDNS}" -conf "${NODE_DIR}/Corefile"
start kube-proxy "${BIN}/kube-proxy" --config="${NODE_DIR}/kube-proxy.yaml" --v=1
start kubelet "${BIN}/kubelet" \
  --config="${NODE_DIR}/kubelet.yaml" \
  --kubeconfig="${NODE_DIR}/kubelet.kubeconfig" \
  --root-dir="${NODE_KUBELET_ROOT}" \
  --hostname-override="${FERRYMAN_NODE_NAME}" \
  --node-ip="${FERRYMAN_NODE_IP}" \
  --node-labels="type=real,ferryman.dev/node=real" \
  --v=1

node_ready() {
  [[ "$("${KUBECTL[@]}" get node "${FERRYMAN_NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
wait_for "kube-proxy /healthz" curl_ok "http://127.0.0.1:${NODE_PROXY_HEALTHZ_PORT}/healthz"
wait_for "CoreDNS /ready" curl_ok "http://127.0.0.1:${NODE_COREDNS_READY_PORT}/ready"
wait_for "CoreDNS answers kubernetes.default.svc.cluster.local" \
  dns_query "${FERRYMAN_NODE_IP}" kubernetes.default.svc.cluster.local
wait_for "node ${FERRYMAN_NODE_NAME} Ready" node_ready

cat >>"${RUN_DIR}/cluster.env" <<EOF
NODE_NAME=${FERRYMAN_NODE_NAME}
NODE_IP=${FERRYMAN_NODE_IP}
POD_CIDR=${FERRYMAN_NODE_POD_CIDR}
CLUSTER_DNS=${FERRYMAN_NODE_IP}
CONTAINERD_ADDRESS=${NODE_CONTAINERD_SOCK}
CONTAINERD_NAMESPACE=k8s.io
CTR=${CTR}
PAUSE_IMAGE=${NODE_PAUSE_IMAGE}
PROBE_IMAGE=${NODE_PROBE_IMAGE}
EOF
cluster_log "node: ${FERRYMAN_NODE_NAME} Ready at ${FERRYMAN_NODE_IP} in $((SECONDS - NODE_START))s (images: ${CTR} --address ${NODE_CONTAINERD_SOCK} -n k8s.io images import ...)"
