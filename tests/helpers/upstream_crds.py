"""The upstream CRDs (KServe, KubeRay, Prometheus Operator, Gateway API) and validation against their schemas.

* :func:`directory` — where the CRD files are: ``scripts/cluster/crds.sh`` run once per test session. It
  fetches them from their projects' Go modules (pinned in scripts/cluster/env.sh) into
  ``~/.cache/ferryman/crds/<versions>/`` the first time (``go mod download`` through the Go module proxy, the
  only network use) and afterwards only prints that directory. A failure is an error, never a skip.
* :func:`schema` — a version's ``openAPIV3Schema``.
* :func:`problems` — what the apiserver would refuse in an object: JSON-schema errors (types, enums,
  required fields, patterns) and the fields structural pruning would drop (:func:`unknown_fields`), which
  ``fieldValidation=Strict`` turns into an error.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_SH = REPO_ROOT / "scripts" / "cluster" / "crds.sh"

INFERENCE_SERVICES = "serving.kserve.io_inferenceservices.yaml"
CLUSTER_SERVING_RUNTIMES = "serving.kserve.io_clusterservingruntimes.yaml"
SERVING_RUNTIMES = "serving.kserve.io_servingruntimes.yaml"
RAY_SERVICES = "ray.io_rayservices.yaml"
SERVICE_MONITORS = "monitoring.coreos.com_servicemonitors.yaml"
POD_MONITORS = "monitoring.coreos.com_podmonitors.yaml"
PROMETHEUS_RULES = "monitoring.coreos.com_prometheusrules.yaml"
HTTP_ROUTES = "gateway.networking.k8s.io_httproutes.yaml"
FILES = (
    INFERENCE_SERVICES,
    SERVING_RUNTIMES,
    CLUSTER_SERVING_RUNTIMES,
    RAY_SERVICES,
    SERVICE_MONITORS,
    POD_MONITORS,
    PROMETHEUS_RULES,
    HTTP_ROUTES,
)

# Every object's own header: not part of the structural schema's properties check (metadata is ObjectMeta).
_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


class UpstreamCRDsMissing(RuntimeError):
    pass


@functools.cache
def directory() -> Path:
    """The directory crds.sh prints (fetching the CRDs first if they are not in the cache yet)."""
    try:
        proc = subprocess.run(
            ["bash", str(CRDS_SH)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UpstreamCRDsMissing(f"{CRDS_SH} did not finish in {exc.timeout}s") from exc
    if proc.returncode != 0:
        raise UpstreamCRDsMissing(f"{CRDS_SH} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise UpstreamCRDsMissing(f"{path} lacks {', '.join(missing)}")
    return path


@functools.cache
def crd(filename: str) -> dict[str, Any]:
    # libyaml's loader where there is one: the InferenceService CRD is 1.9 MB (~20 s with the pure-Python one)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc: dict[str, Any] = yaml.load((directory() / filename).read_text(), Loader=loader)
    return doc


@functools.cache
def schema(filename: str, version: str) -> dict[str, Any]:
    for v in crd(filename)["spec"]["versions"]:
        if v["name"] == version:
            found: dict[str, Any] = v["schema"]["openAPIV3Schema"]
            return found
    raise AssertionError(f"{filename} has no version {version}")


def unknown_fields(obj: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """Fields the apiserver's structural pruning would drop: not declared where the schema allows no others.

    An object node keeps its declared ``properties``; ``additionalProperties`` (a schema) declares every key;
    ``x-kubernetes-preserve-unknown-fields`` keeps undeclared keys; ``x-kubernetes-embedded-resource`` keeps
    ``apiVersion``/``kind``/``metadata``. An object node with none of these keeps nothing.
    """
    found: list[str] = []
    if isinstance(obj, list):
        items = node.get("items")
        for i, item in enumerate(obj):
            if isinstance(items, dict):
                found.extend(unknown_fields(item, items, f"{path}[{i}]"))
        return found
    if not isinstance(obj, dict):
        return found
    properties = node.get("properties") or {}
    additional = node.get("additionalProperties")
    keep_unknown = bool(node.get("x-kubernetes-preserve-unknown-fields")) or additional is True
    implicit = _ROOT_FIELDS if (not path or node.get("x-kubernetes-embedded-resource")) else frozenset()
    for key, value in obj.items():
        if key == "metadata" and key in implicit:
            continue  # ObjectMeta: the apiserver decodes it as such, whatever the schema says
        sub = properties.get(key)
        if sub is None and isinstance(additional, dict):
            sub = additional
        if sub is not None:
            found.extend(unknown_fields(value, sub, f"{path}.{key}"))
        elif key not in implicit and not keep_unknown:
            found.append(f"{path}.{key}")
    return found


def schema_errors(obj: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """JSON-schema errors (the OpenAPI v3 subset the apiserver checks without CEL), ``path: message``."""
    validator = jsonschema.Draft7Validator(node)
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def problems(obj: dict[str, Any], filename: str, version: str) -> list[str]:
    """Everything the apiserver would refuse in ``obj`` with strict field validation (empty: accepted)."""
    node = schema(filename, version)
    return schema_errors(obj, node) + [f"{f}: unknown field" for f in unknown_fields(obj, node)]
