#!/usr/bin/env bash
# Stop the real node started by node-up.sh for RUN_DIR and remove everything it made, in order:
# cordon it and delete its pods (waiting for kubelet to stop them), stop kubelet, kube-proxy (then
# `kube-proxy --cleanup`), CoreDNS, the containers left in containerd, containerd, any shim or
# container process that survived; unmount what is mounted under the node's state; remove the
# kubepods cgroups, the KUBE-/CNI- iptables chains, the Service CIDR route and the bridge; restore
# the sysctls saved before start; delete the node state directories. Then checks that nothing is left.
#
# Usage: bash scripts/cluster/node-down.sh RUN_DIR
#        bash scripts/cluster/node-down.sh --machine OWNER_RUN_DIR   (leftovers of a node whose run
#                                                                   dir may be gone; used by node-up.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/env.sh
source "${HERE}/env.sh"
# shellcheck source=SCRIPTDIR/node-lib.sh
source "${HERE}/node-lib.sh"

if [[ "${1:-}" == --machine ]]; then
  shift
fi
RUN_DIR="${1:?usage: node-down.sh RUN_DIR}"
[[ -d "${RUN_DIR}" ]] && RUN_DIR="$(cd "${RUN_DIR}" && pwd)"
node_paths "${RUN_DIR}"
BIN="${FERRYMAN_K8S_BIN}"
START=${SECONDS}

if [[ -f "${NODE_OWNER}" && "$(<"${NODE_OWNER}")" != "${RUN_DIR}" ]]; then
  cluster_log "node: this machine's node belongs to $(<"${NODE_OWNER}"), not ${RUN_DIR}; leaving it alone"
  exit 0
fi
if [[ ! -f "${NODE_OWNER}" ]] && ! node_active "${RUN_DIR}" && ! ip link show "${FERRYMAN_NODE_BRIDGE}" >/dev/null 2>&1 &&
  [[ ! -d "${FERRYMAN_NODE_STATE}" ]]; then
  exit 0 # no node was started (FERRYMAN_REAL_NODE=0, or up.sh failed before it)
fi
[[ "$(id -u)" == 0 ]] || cluster_die "stopping the real node needs root"
mkdir -p "${FERRYMAN_NODE_RUN}"
exec 8>"${FERRYMAN_NODE_RUN}/.lock"
flock -w 60 8 || cluster_die "${FERRYMAN_NODE_RUN}/.lock is held by another node-up/node-down"

CTR=()
ctr_bin="$(sed -n 's/^CTR=//p' "${RUN_DIR}/cluster.env" 2>/dev/null || true)"
[[ -z "${ctr_bin}" ]] && ctr_bin="${FERRYMAN_NODE_CACHE}/containerd-${FERRYMAN_CONTAINERD_VERSION}/ctr"
[[ -x "${ctr_bin}" ]] && CTR=("${ctr_bin}" --address "${NODE_CONTAINERD_SOCK}" -n k8s.io)

# --- 1. pods, while kubelet still runs -----------------------------------------------------

if node_pid_ours "${RUN_DIR}" kubelet >/dev/null && [[ -f "${RUN_DIR}/kubeconfig" ]] &&
  "${BIN}/kubectl" --kubeconfig "${RUN_DIR}/kubeconfig" get --raw=/readyz >/dev/null 2>&1; then
  K=("${BIN}/kubectl" --kubeconfig "${RUN_DIR}/kubeconfig")
  # Cordon first, so controllers cannot put replacements on the node while it drains.
  "${K[@]}" cordon "${FERRYMAN_NODE_NAME}" >/dev/null 2>&1 || true
  sel="spec.nodeName=${FERRYMAN_NODE_NAME}"
  if [[ -n "$("${K[@]}" get pods -A --field-selector "${sel}" -o name 2>/dev/null)" ]]; then
    cluster_log "node: deleting the pods on ${FERRYMAN_NODE_NAME}"
    "${K[@]}" delete pods -A --field-selector "${sel}" --grace-period=5 --wait=false >/dev/null 2>&1 || true
    deadline=$((SECONDS + 60))
    while [[ -n "$("${K[@]}" get pods -A --field-selector "${sel}" -o name 2>/dev/null)" ]]; do
      if ((SECONDS > deadline)); then
        cluster_log "node: pods still there after 60s; forcing"
        "${K[@]}" delete pods -A --field-selector "${sel}" --force --grace-period=0 >/dev/null 2>&1 || true
        break
      fi
      sleep 0.5
    done
  fi
fi

# --- 2. processes --------------------------------------------------------------------------

# stop_pid NAME PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" i
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid}" 2>/dev/null; then
    cluster_log "node: ${name} (pid ${pid}) ignored SIGTERM; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    sleep 0.2
  fi
  cluster_log "node: stopped ${name} (pid ${pid})"
}

# stop_component NAME: the process started for RUN_DIR (pid file, or its run-dir command line).
stop_component() {
  local name="$1" pid
  if pid="$(node_pid_ours "${RUN_DIR}" "${name}")"; then
    stop_pid "${name}" "${pid}"
  fi
  rm -f "${PIDS}/${name}.pid"
  # Without its pid file (run dir gone), match the command line on the run dir's node config.
  for pid in $(pgrep -f -- "${NODE_DIR}/" 2>/dev/null || true); do
    if [[ "$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" == */"${name}"\ * ]]; then
      stop_pid "${name}" "${pid}"
    fi
  done
  return 0
}

stop_component kubelet
stop_component kube-proxy
stop_component coredns
if [[ -x "${BIN}/kube-proxy" ]]; then
  "${BIN}/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
fi

# Containers kubelet did not stop (pods not deleted through the API, a kubelet that was gone).
if ((${#CTR[@]} > 0)) && "${CTR[@]}" version >/dev/null 2>&1; then
  for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "${task}" >/dev/null 2>&1 || true
  done
  sleep 0.3
  for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks delete -f "${task}" >/dev/null 2>&1 || true
  done
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" containers rm "${c}" >/dev/null 2>&1 || true
  done
fi
stop_component containerd

# Shims of our containerd (their command line names our socket) and processes in kubepods cgroups.
survivors() {
  local pid f
  for pid in $(pgrep -f -- "-address ${NODE_CONTAINERD_SOCK}" 2>/dev/null || true); do
    echo "${pid}"
  done
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "${f}" ]] || continue
    find "${f}" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -u
}
for _ in 1 2 3; do
  left="$(survivors | sort -u | tr '\n' ' ')"
  [[ -z "${left// /}" ]] && break
  cluster_log "node: killing leftover container processes: ${left}"
  # shellcheck disable=SC2086
  kill -KILL ${left} 2>/dev/null || true
  sleep 0.5
done

# --- 3. mounts, cgroups, network -----------------------------------------------------------

unmount_under() {
  local dir="$1" m
  # Deepest first; /proc/self/mountinfo's 5th field is the mount point (octal-escaped spaces).
  while IFS= read -r m; do
    umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || true
  done < <(awk -v d="${dir}" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
unmount_under "${FERRYMAN_NODE_STATE}"
unmount_under "${FERRYMAN_NODE_RUN}"

for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d "${f}" ]] && find "${f}" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# ipt_cleanup IPTABLES: flush and delete the KUBE-*, CNI-* and FERRYMAN-NODE-* chains and the
# rules of the built-in chains that jump to them.
ipt_cleanup() {
  local ipt="$1" table rule chains c
  command -v "${ipt}" >/dev/null 2>&1 || return 0
  for table in filter nat mangle raw; do
    chains="$("${ipt}" -t "${table}" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\|FERRYMAN-NODE\)-[^ ]*\)$/\1/p')"
    [[ -n "${chains}" ]] || continue
    for c in ${chains}; do
      "${ipt}" -t "${table}" -F "${c}" 2>/dev/null || true
    done
    while IFS= read -r rule; do
      eval "\"${ipt}\" -t ${table} ${rule/#-A/-D}" 2>/dev/null || true
    done < <("${ipt}" -t "${table}" -S 2>/dev/null | grep -E -- '^-A .* -j (KUBE|CNI|FERRYMAN-NODE)-' || true)
    for c in ${chains}; do
      "${ipt}" -t "${table}" -X "${c}" 2>/dev/null || true
    done
  done
}
ipt_cleanup iptables
ipt_cleanup ip6tables

service_cidr="$(cat "${FERRYMAN_NODE_RUN}/service-cidr" 2>/dev/null || true)"
[[ -n "${service_cidr}" ]] && ip route del "${service_cidr}" dev "${FERRYMAN_NODE_BRIDGE}" 2>/dev/null || true
ip link del "${FERRYMAN_NODE_BRIDGE}" 2>/dev/null || true
# veth host ends whose pod namespace is gone disappear with it; any still attached went with the bridge.

if [[ -f "${NODE_SYSCTLS}" ]]; then
  while IFS='=' read -r key value; do
    [[ -n "${key}" ]] && sysctl_set "${key}" "${value}" || true
  done <"${NODE_SYSCTLS}"
  cluster_log "node: restored sysctls: $(cut -d= -f1 "${NODE_SYSCTLS}" | tr '\n' ' ')"
fi

# kubelet links every container's log into /var/log/containers (a fixed path); drop the links to ours.
for link in /var/log/containers/*.log; do
  [[ -L "${link}" && "$(readlink "${link}")" == "${FERRYMAN_NODE_STATE}/"* ]] && rm -f "${link}"
done
if [[ -f "${FERRYMAN_NODE_RUN}/made-var-log-containers" ]]; then
  rmdir /var/log/containers 2>/dev/null || true
fi
rm -rf "${FERRYMAN_NODE_STATE}"
find "${FERRYMAN_NODE_RUN}" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} + 2>/dev/null || true
[[ "${FERRYMAN_CLUSTER_KEEP:-0}" == 1 ]] || rm -rf "${NODE_DIR}"

# --- 4. check ------------------------------------------------------------------------------

problems=()
left="$(survivors | tr '\n' ' ')"
[[ -z "${left// /}" ]] || problems+=("processes ${left}")
node_active "${RUN_DIR}" && problems+=("node components still running")
awk -v a="${FERRYMAN_NODE_STATE}" -v b="${FERRYMAN_NODE_RUN}" \
  'index($5, a) == 1 || index($5, b) == 1' /proc/self/mountinfo | grep -q . && problems+=("mounts under ${FERRYMAN_NODE_STATE} or ${FERRYMAN_NODE_RUN}")
ip link show "${FERRYMAN_NODE_BRIDGE}" >/dev/null 2>&1 && problems+=("bridge ${FERRYMAN_NODE_BRIDGE}")
for ipt in iptables ip6tables; do
  command -v "${ipt}" >/dev/null 2>&1 || continue
  for table in filter nat mangle raw; do
    "${ipt}" -t "${table}" -S 2>/dev/null | grep -qE '^-N (KUBE|CNI|FERRYMAN-NODE)-' &&
      problems+=("${ipt} chains in ${table}")
  done
done
for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d "${f}" ]] && problems+=("cgroup ${f}")
done
if ((${#problems[@]} > 0)); then
  cluster_die "node teardown left: ${problems[*]}"
fi
rm -f "${NODE_OWNER}"
cluster_log "node: removed in $((SECONDS - START))s; no process, mount, bridge, iptables chain or cgroup left"
