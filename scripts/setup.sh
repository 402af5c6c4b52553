#!/usr/bin/env bash
# Creates .venv at the repository root from the checked-in lock (idempotent, quick when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
# The upstream CRDs the schema tests and the test cluster use, from their Go modules (quick once cached).
# Go from the official tarball lives in /usr/local/go/bin, which a fresh login shell may not have on PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
if command -v go >/dev/null 2>&1; then
  bash scripts/cluster/crds.sh >/dev/null
  # ghz, the gRPC load generator of `make bench` (built from its Go module once, cached in ~/.cache/ferryman/bin)
  python3 -m loadtests.ghz >/dev/null || echo "ghz could not be built: the gRPC benchmark will report it" >&2
else
  echo "go is not on PATH: scripts/cluster/crds.sh cannot fetch the upstream CRDs the schema and cluster tests need" >&2
fi
stamp=.venv/.ferryman-setup
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/ferryman ]; then
  exit 0
fi
PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv (the installer for the lock file)"
  "$PY" -m pip install --quiet --disable-pip-version-check uv
fi
UV=$(command -v uv || echo "$PY -m uv")
[ -x .venv/bin/python ] || $UV venv --quiet .venv --python "$PY"
echo "installing locked dependencies into .venv"
$UV pip install --quiet --python .venv/bin/python -r requirements/lock.txt
$UV pip install --quiet --python .venv/bin/python --no-deps -e .
bash scripts/system-deps.sh
echo "$want" > "$stamp"
