#!/usr/bin/env bash
# Fetch the upstream CustomResourceDefinitions the test control plane installs and the schema unit tests
# read (KServe, KubeRay RayService, Prometheus Operator, Gateway API HTTPRoute) from their projects' Go
# modules, at the versions pinned in env.sh, and print the directory that holds them.
#
#   bash scripts/cluster/crds.sh        # prints e.g. ~/.cache/ferryman/crds/kserve-v0.20.0_kuberay-.../
#
# Each module is fetched with `go mod download -json <module>@<version>` through the Go module proxy,
# checked against the Go checksum database like any dependency, and unpacked in the Go module cache (the
# way envtest-based operators find CRDs there); the CRD files are copied unmodified from the module's
# directory into FERRYMAN_UPSTREAM_CRDS, with a SOURCES.tsv naming module, version, go.sum hash and path
# of each. Idempotent: when that directory is complete nothing is fetched and no network is needed.
# Progress goes to stderr, the directory to stdout. docs/cluster.md ("Upstream CRDs") has the provenance.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/env.sh
source "${HERE}/env.sh"

DEST="${FERRYMAN_UPSTREAM_CRDS}"
MARKER="${DEST}/SOURCES.tsv"

# file | module | version | directory inside the module
SOURCES=(
  "serving.kserve.io_inferenceservices.yaml|github.com/kserve/kserve|${FERRYMAN_KSERVE_VERSION}|config/crd/full"
  "serving.kserve.io_servingruntimes.yaml|github.com/kserve/kserve|${FERRYMAN_KSERVE_VERSION}|config/crd/full"
  "serving.kserve.io_clusterservingruntimes.yaml|github.com/kserve/kserve|${FERRYMAN_KSERVE_VERSION}|config/crd/full"
  "ray.io_rayservices.yaml|github.com/ray-project/kuberay/ray-operator|${FERRYMAN_KUBERAY_VERSION}|config/crd/bases"
  "monitoring.coreos.com_servicemonitors.yaml|github.com/prometheus-operator/prometheus-operator|${FERRYMAN_PROMETHEUS_OPERATOR_VERSION}|example/prometheus-operator-crd"
  "monitoring.coreos.com_podmonitors.yaml|github.com/prometheus-operator/prometheus-operator|${FERRYMAN_PROMETHEUS_OPERATOR_VERSION}|example/prometheus-operator-crd"
  "monitoring.coreos.com_prometheusrules.yaml|github.com/prometheus-operator/prometheus-operator|${FERRYMAN_PROMETHEUS_OPERATOR_VERSION}|example/prometheus-operator-crd"
  "gateway.networking.k8s.io_httproutes.yaml|sigs.k8s.io/gateway-api|${FERRYMAN_GATEWAY_API_VERSION}|config/crd/standard"
)

# Complete: every file there, and (for the directory this script fills) SOURCES.tsv, written last. A
# directory given in FERRYMAN_UPSTREAM_CRDS outside the cache only needs the files.
OWN_DIR=0
[[ "${DEST}" == "${FERRYMAN_CACHE}/crds/"* ]] && OWN_DIR=1
complete() {
  local entry
  [[ "${OWN_DIR}" == 0 || -f "${MARKER}" ]] || return 1
  for entry in "${SOURCES[@]}"; do
    [[ -s "${DEST}/${entry%%|*}" ]] || return 1
  done
}

if complete; then
  echo "${DEST}"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  cluster_die "go is not on PATH: it fetches the upstream CRDs from their Go modules (scripts/cluster/crds.sh)"

[[ "${OWN_DIR}" == 1 || ! -e "${DEST}" ]] ||
  cluster_die "FERRYMAN_UPSTREAM_CRDS=${DEST} lacks some of the CRD files (${SOURCES[*]%%|*}); not touching it"
mkdir -p "$(dirname "${DEST}")"
WORK="$(mktemp -d "$(dirname "${DEST}")/.fetch.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
mkdir "${WORK}/crds" "${WORK}/empty"

# module_dir MODULE VERSION: download the module (if not in the Go module cache yet) and remember its
# directory and go.sum hash in MODULE_DIRS / MODULE_SUMS.
declare -A MODULE_DIRS=() MODULE_SUMS=()
module_dir() {
  local key="$1@$2" json parsed
  [[ -z "${MODULE_DIRS[${key}]:-}" ]] || return 0
  cluster_log "go mod download ${key}"
  # From an empty directory and without a workspace: a plain download by module path and version.
  json="$(cd "${WORK}/empty" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "${key}" 2>&1)" || true
  parsed="$(python3 -c '
import json, sys
info = json.loads(sys.argv[1])
if info.get("Error") or not info.get("Dir"):
    sys.exit(1)
print(info["Dir"], info.get("Sum", "-"))
' "${json}" 2>/dev/null)" || cluster_die "go mod download ${key} failed: ${json}"
  MODULE_DIRS[${key}]="${parsed% *}"
  MODULE_SUMS[${key}]="${parsed##* }"
}

printf 'file\tmodule\tversion\tgo.sum\tpath\n' >"${WORK}/crds/SOURCES.tsv.part"
for entry in "${SOURCES[@]}"; do
  IFS='|' read -r file module version path <<<"${entry}"
  module_dir "${module}" "${version}"
  dir="${MODULE_DIRS[${module}@${version}]}"
  src="${dir}/${path}/${file}"
  [[ -f "${src}" ]] || cluster_die "${module}@${version} has no ${path}/${file}"
  cp "${src}" "${WORK}/crds/${file}"
  chmod 644 "${WORK}/crds/${file}"  # the module cache is read-only
  grep -q '^kind: CustomResourceDefinition$' "${WORK}/crds/${file}" ||
    cluster_die "${module}@${version}/${path}/${file} is not a CustomResourceDefinition"
  printf '%s\t%s\t%s\t%s\t%s\n' "${file}" "${module}" "${version}" "${MODULE_SUMS[${module}@${version}]}" \
    "${path}/${file}" >>"${WORK}/crds/SOURCES.tsv.part"
done
mv "${WORK}/crds/SOURCES.tsv.part" "${WORK}/crds/SOURCES.tsv"

# Another run may have finished first: keep its (identical) directory.
if ! complete; then
  rm -rf "${DEST}"
  mv -T "${WORK}/crds" "${DEST}" 2>/dev/null || complete || cluster_die "could not move the CRDs to ${DEST}"
fi
cluster_log "upstream CRDs in ${DEST}"
echo "${DEST}"
