"""The real ``helm`` binary against ``charts/ferryman``: render, lint and parse, without a cluster.

* :func:`helm_binary` — the cached helm (``$FERRYMAN_K8S_BIN/helm``, built by scripts/cluster/build.sh) or
  None; :func:`require_helm` skips the calling test with the command to build it.
* :func:`render` — ``helm template`` with values files and ``--set``-style overrides (passed as a values
  file, so types are exact); returns the objects as dicts, in order. :func:`render_error` returns the
  error text of a rendering expected to fail.
* :func:`by_kind`, :func:`one`, :func:`pod_spec`, :func:`container_env` — pick things out of the objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "ferryman"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
ENV_SH = REPO_ROOT / "scripts" / "cluster" / "env.sh"


@lru_cache(maxsize=1)
def helm_binary() -> Path | None:
    proc = subprocess.run(
        ["bash", "-c", 'source "$1"; echo "${FERRYMAN_K8S_BIN}"', "env.sh", str(ENV_SH)],
        capture_output=True,
        text=True,
        check=False,
    )
    path = Path(proc.stdout.strip()) / "helm"
    return path if proc.returncode == 0 and path.is_file() else None


def require_helm() -> Path:
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm is not built yet: run `bash scripts/cluster/build.sh` (caches kubectl and helm)")
    return helm


def run_helm(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run helm; with check=True a failure raises AssertionError carrying stderr."""
    helm = require_helm()
    full_env = dict(os.environ)
    # Keep helm's caches and config away from the user's home directory.
    cache = Path(tempfile.gettempdir()) / "ferryman-helm-test"
    full_env.setdefault("HELM_CACHE_HOME", str(cache / "cache"))
    full_env.setdefault("HELM_CONFIG_HOME", str(cache / "config"))
    full_env.setdefault("HELM_DATA_HOME", str(cache / "data"))
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def _args(values_files: Sequence[Path | str], values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(f)]
    if values:
        override = tmp / "override-values.yaml"
        override.write_text(json.dumps(values))  # JSON is YAML: exact types, no --set parsing surprises
        args += ["-f", str(override)]
    return args


def render(
    values_files: Sequence[Path | str] = (),
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "ferryman",
    namespace: str = "ferryman-system",
    extra: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``helm template`` the chart; the rendered objects (empty documents dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_helm(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *_args(values_files, values, Path(tmp)),
            *extra,
        )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_error(values: Mapping[str, Any], *, values_files: Sequence[Path | str] = ()) -> str:
    """The error of a ``helm template`` expected to fail (AssertionError if it succeeds)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_helm(
            "template", "ferryman", str(CHART), *_args(values_files, values, Path(tmp)), check=False
        )
    if proc.returncode == 0:
        raise AssertionError(f"helm template accepted {values!r}")
    return proc.stderr


def by_kind(objs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single object of ``kind`` (whose name ends with ``name_suffix``, if given)."""
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


POD_TEMPLATE_KINDS = ("Deployment", "Job", "StatefulSet", "DaemonSet")


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def container_env(container: Mapping[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom dict) of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
