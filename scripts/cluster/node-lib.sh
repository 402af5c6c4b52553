# shellcheck shell=bash
# Shared paths and helpers of node-up.sh and node-down.sh (source it after env.sh).

# node_paths RUN_DIR: the paths of the real node started for RUN_DIR.
node_paths() {
  local run_dir="$1"
  NODE_DIR="${run_dir}/node"
  PKI="${run_dir}/pki"
  LOGS="${run_dir}/logs"
  PIDS="${run_dir}/pids"
  NODE_CONTAINERD_SOCK="${FERRYMAN_NODE_RUN}/containerd.sock"
  NODE_KUBELET_ROOT="${FERRYMAN_NODE_STATE}/kubelet"
  # One real node per machine, so its ports are fixed (all but kubelet's API on 127.0.0.1).
  NODE_KUBELET_PORT=10250
  NODE_KUBELET_HEALTHZ_PORT=10248
  NODE_PROXY_HEALTHZ_PORT=10256
  NODE_PROXY_METRICS_PORT=10249
  NODE_COREDNS_HEALTH_PORT=10258
  NODE_COREDNS_READY_PORT=10259
}

# The run dir whose node owns this machine's node state, and the sysctls saved before it started.
NODE_OWNER="${FERRYMAN_NODE_RUN}/owner"
NODE_SYSCTLS="${FERRYMAN_NODE_RUN}/sysctl.saved"
# Changed by the bridge plugin / us (forwarding, bridge netfilter) and by kubelet (its "kernel
# defaults"); node-down.sh writes the saved values back.
NODE_SYSCTL_KEYS=(
  net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
)
# Processes of the node, in the order node-down.sh stops them.
NODE_PROCESSES=(kubelet kube-proxy coredns containerd)

# node_pid_ours RUN_DIR NAME: print the pid of NAME started for RUN_DIR if it is still that process.
node_pid_ours() {
  local run_dir="$1" name="$2" pid cmdline
  [[ -f "${run_dir}/pids/${name}.pid" ]] || return 1
  pid="$(<"${run_dir}/pids/${name}.pid")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  { cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline")"; } 2>/dev/null || return 1
  [[ "${cmdline}" == *"${run_dir}/"* ]] || return 1
  echo "${pid}"
}

# node_active RUN_DIR: a process of RUN_DIR's node still runs.
node_active() {
  local name
  for name in "${NODE_PROCESSES[@]}"; do
    node_pid_ours "$1" "${name}" >/dev/null && return 0
  done
  return 1
}

sysctl_set() {
  local f="/proc/sys/${1//.//}"
  [[ -w "${f}" ]] && echo "$2" >"${f}"
}

curl_ok() {
  curl -fsS --max-time 3 -o /dev/null "$1"
}

# dns_query SERVER NAME: SERVER answers an A query for NAME with at least one address.
dns_query() {
  python3 - "$1" "$2" <<'EOF'
import random, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
qid = random.randrange(65536)
query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, 53))
data = s.recv(4096)
rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
sys.exit(0 if rid == qid and flags & 0xF == 0 and ancount > 0 else 1)
EOF
}
