#!/usr/bin/env bash
# Stop the test cluster started by up.sh and remove its run state: first the real node
# (node-down.sh: pods, kubelet, kube-proxy, CoreDNS, containerd, mounts, cgroups, iptables chains,
# bridge, route, sysctls), then the control plane processes.
#
# Usage: bash scripts/cluster/down.sh [RUN_DIR]     (default: <repo>/.cache/cluster)
# FERRYMAN_CLUSTER_KEEP=1 stops the processes but keeps RUN_DIR (logs, certificates).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/env.sh
source "${HERE}/env.sh"

RUN_DIR="${1:-${FERRYMAN_REPO_ROOT}/.cache/cluster}"
if [[ ! -d "${RUN_DIR}" ]]; then
  cluster_log "nothing to stop: ${RUN_DIR} does not exist"
  exit 0
fi
RUN_DIR="$(cd "${RUN_DIR}" && pwd)"
[[ -f "${RUN_DIR}/.ferryman-cluster" ]] ||
  cluster_die "${RUN_DIR} was not made by up.sh (no .ferryman-cluster marker); refusing to touch it"
PIDS="${RUN_DIR}/pids"

# The real node goes first: its pods are deleted through the apiserver, which must still run.
NODE_OK=1
if ! bash "${HERE}/node-down.sh" "${RUN_DIR}"; then
  NODE_OK=0
  cluster_log "WARNING: the real node's teardown left something behind (see above)"
fi

# ours PID: the process is alive and was started for this RUN_DIR (guards against pid reuse).
ours() {
  local pid="$1" cmdline
  { cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline")"; } 2>/dev/null || return 1
  [[ "${cmdline}" == *"${RUN_DIR}/"* ]]
}

# Stop in reverse start order so nothing reconnects to a component already gone.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pidfile="${PIDS}/${name}.pid"
  [[ -f "${pidfile}" ]] || continue
  pid="$(<"${pidfile}")"
  if [[ "${pid}" =~ ^[0-9]+$ ]] && ours "${pid}"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      ours "${pid}" || break
      sleep 0.1
    done
    if ours "${pid}"; then
      cluster_log "${name} (pid ${pid}) ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      for _ in $(seq 1 50); do
        ours "${pid}" || break
        sleep 0.1
      done
    fi
    cluster_log "stopped ${name} (pid ${pid})"
  fi
  rm -f "${pidfile}"
done

if [[ "${FERRYMAN_CLUSTER_KEEP:-0}" == 1 ]]; then
  cluster_log "processes stopped; kept ${RUN_DIR}"
else
  rm -rf "${RUN_DIR}"
  cluster_log "removed ${RUN_DIR}"
fi
[[ "${NODE_OK}" == 1 ]] || exit 1
