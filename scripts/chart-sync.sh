#!/usr/bin/env bash
# Refresh the Helm chart's copies of files that live elsewhere in the repository (Helm cannot read files
# outside the chart), and its generated README values table.
#
#   bash scripts/chart-sync.sh          # copy + regenerate
#   bash scripts/chart-sync.sh --check  # exit 1 (listing the stale copies) when anything is out of date
#
# tests/unit/test_chart_files.py fails when a copy differs from its source; this script fixes that.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="${ROOT}/charts/ferryman"
PY="${ROOT}/.venv/bin/python"
[[ -x "${PY}" ]] || PY=python3
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

# source (relative to the repository) -> copy (relative to the chart)
PAIRS=(
  "operators/ferryman_operator/crd/modeldeployments.yaml:crds/modeldeployments.yaml"
  "operators/ferryman_operator/rbac.yaml:files/operator-rbac.yaml"
  "runtimes/ferryman_runtimes/kserve/clusterservingruntime.yaml:files/kserve/clusterservingruntime.yaml"
  "monitoring/alerts/ferryman-rules.yaml:files/alerts/ferryman-rules.yaml"
  "loadtests/__init__.py:files/loadtest/loadtests/__init__.py"
  "loadtests/locustfile.py:files/loadtest/loadtests/locustfile.py"
  "loadtests/payloads.py:files/loadtest/loadtests/payloads.py"
  "loadtests/shapes.py:files/loadtest/loadtests/shapes.py"
)
for dashboard in "${ROOT}"/monitoring/dashboards/*.json; do
  [[ -e "${dashboard}" ]] || continue
  PAIRS+=("monitoring/dashboards/$(basename "${dashboard}"):files/dashboards/$(basename "${dashboard}")")
done

stale=0
for pair in "${PAIRS[@]}"; do
  src="${ROOT}/${pair%%:*}"
  dst="${CHART}/${pair#*:}"
  if [[ ! -f "${src}" ]]; then
    echo "missing source: ${pair%%:*}" >&2
    stale=1
    continue
  fi
  if ! cmp -s "${src}" "${dst}"; then
    if (( CHECK )); then
      echo "stale: charts/ferryman/${pair#*:} differs from ${pair%%:*}" >&2
      stale=1
    else
      mkdir -p "$(dirname "${dst}")"
      cp "${src}" "${dst}"
      echo "copied ${pair%%:*} -> charts/ferryman/${pair#*:}"
    fi
  fi
done

# Dashboards removed at the source are removed from the chart too.
for copy in "${CHART}"/files/dashboards/*.json; do
  [[ -e "${copy}" ]] || continue
  if [[ ! -f "${ROOT}/monitoring/dashboards/$(basename "${copy}")" ]]; then
    if (( CHECK )); then
      echo "stale: charts/ferryman/files/dashboards/$(basename "${copy}") has no source" >&2
      stale=1
    else
      rm -f "${copy}"
      echo "removed charts/ferryman/files/dashboards/$(basename "${copy}")"
    fi
  fi
done

if (( CHECK )); then
  "${PY}" "${ROOT}/scripts/helm-docs.py" --check || stale=1
  exit "${stale}"
fi
"${PY}" "${ROOT}/scripts/helm-docs.py"
exit "${stale}"
