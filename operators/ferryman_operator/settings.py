"""Operator settings: command-line flags override ``FERRYMAN_*`` environment variables override defaults.

Every knob the Helm chart sets is listed in :data:`ENV` (name, default, meaning) and in docs/operator.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_IMAGE = "ghcr.io/ferryman-dev/ferryman:0.1.0"
DEFAULT_RAY_IMAGE = "ghcr.io/ferryman-dev/ferryman-ray:0.1.0"

# env var -> (default, help)
ENV: dict[str, tuple[str, str]] = {
    "FERRYMAN_NAMESPACES": ("", "comma-separated namespaces to watch; empty = every namespace (cluster-wide)"),
    "FERRYMAN_PROMETHEUS_URL": ("", "Prometheus HTTP API base URL for rollout analysis; empty = no analysis "
                                    "(rollouts hold, never promote on missing data)"),
    "FERRYMAN_PROMETHEUS_NAMESPACE_LABEL": ("namespace", "series label carrying the Kubernetes namespace "
                                                         "(added by ServiceMonitor/PodMonitor scraping); empty = none"),
    "FERRYMAN_ANALYSIS_SELECTOR": ("", "extra PromQL label matchers for the analysis, e.g. 'container=\"gateway\"'"),
    "FERRYMAN_RESYNC_SECONDS": ("600", "safety-net pass over every resource, spread over the period (reconciles "
                                       "are driven by watch events and analysis timers, not by this)"),
    "FERRYMAN_WORKERS": ("16", "reconciles in flight at once"),
    "FERRYMAN_IMAGE": (DEFAULT_IMAGE, "ferryman image for version servers and the gateway"),
    "FERRYMAN_IMAGE_PULL_POLICY": ("IfNotPresent", "pull policy of the version servers and gateways: Always, "
                                                   "IfNotPresent or Never"),
    "FERRYMAN_WORKLOAD_ENV": ("[]", "JSON list of Kubernetes EnvVars added to every version server, e.g. the "
                                    "S3 endpoint and credentials (valueFrom a Secret in the model's namespace)"),
    "FERRYMAN_RAY_IMAGE": (DEFAULT_RAY_IMAGE, "Ray image (ferryman + ray[serve]) for RayService clusters"),
    "FERRYMAN_KSERVE_RUNTIME": ("ferryman-onnx", "ClusterServingRuntime used by kserve InferenceServices"),
    "FERRYMAN_GRPC": ("false", "also serve the Open Inference Protocol v2 over gRPC on port 8081 of every gateway "
                               "and version server (native and kserve runtimes), routed like REST"),
    "FERRYMAN_PREFLIGHT": ("true", "check that http(s) model URIs answer before rolling them out"),
    "FERRYMAN_PREFLIGHT_TTL_SECONDS": ("60", "how long a model URI check result is reused"),
    "FERRYMAN_LEADER_ELECTION": ("true", "elect one active replica through a coordination.k8s.io Lease"),
    "FERRYMAN_LEASE_NAME": ("ferryman-operator", "name of the leader-election Lease"),
    "FERRYMAN_LEASE_NAMESPACE": ("", "namespace of the Lease; empty = the pod's namespace (or 'default')"),
    "FERRYMAN_LEASE_SECONDS": ("15", "lease duration; a standby takes over this long after the leader vanished"),
    "FERRYMAN_HEALTH_ADDRESS": ("0.0.0.0:8081", "host:port of the liveness endpoint (GET /healthz); empty = off"),
    "FERRYMAN_IDENTITY": ("", "this replica's identity in the Lease and Events; empty = hostname-pid"),
    "FERRYMAN_LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR"),
}

_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    prometheus_url: str = ""
    prometheus_namespace_label: str = "namespace"
    analysis_selector: str = ""
    resync_seconds: float = 600.0
    workers: int = 16
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    workload_env: tuple[dict[str, Any], ...] = ()
    ray_image: str = DEFAULT_RAY_IMAGE
    kserve_runtime: str = "ferryman-onnx"
    grpc: bool = False
    preflight: bool = True
    preflight_ttl_seconds: float = 60.0
    leader_election: bool = True
    lease_name: str = "ferryman-operator"
    lease_namespace: str = "default"
    lease_seconds: float = 15.0
    health_address: str = "0.0.0.0:8081"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    log_level: str = "INFO"
    kubeconfig: str | None = None

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive(name: str, text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {text!r}")
    return value


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _pull_policy(text: str) -> str:
    if text not in _PULL_POLICIES:
        raise ValueError(f"FERRYMAN_IMAGE_PULL_POLICY must be one of {', '.join(_PULL_POLICIES)}, got {text!r}")
    return text


def _env_list(text: str) -> tuple[dict[str, Any], ...]:
    """FERRYMAN_WORKLOAD_ENV: a JSON list of EnvVar objects (``name`` plus ``value`` or ``valueFrom``)."""
    try:
        doc = json.loads(text or "[]")
    except json.JSONDecodeError as err:
        raise ValueError(f"FERRYMAN_WORKLOAD_ENV is not JSON: {err}") from err
    if not isinstance(doc, list):
        raise ValueError("FERRYMAN_WORKLOAD_ENV must be a JSON list of {name, value | valueFrom} objects")
    for i, item in enumerate(doc):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]
                and set(item) <= {"name", "value", "valueFrom"} and ("value" in item) != ("valueFrom" in item)):
            raise ValueError(f"FERRYMAN_WORKLOAD_ENV[{i}] must be {{name, value}} or {{name, valueFrom}}, "
                             f"got {item!r}")
        if "value" in item and not isinstance(item["value"], str):
            raise ValueError(f"FERRYMAN_WORKLOAD_ENV[{i}].value must be a string, got {item['value']!r}")
    return tuple(doc)


def _default_lease_namespace() -> str:
    try:
        with open(_SA_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def from_env(env: Mapping[str, str] | None = None, *, kubeconfig: str | None = None,
             namespaces: Sequence[str] = ()) -> Settings:
    """Settings from ``env`` (default: os.environ); explicit ``namespaces`` override FERRYMAN_NAMESPACES."""
    source = os.environ if env is None else env

    def get(name: str) -> str:
        return source.get(name, ENV[name][0]).strip()

    try:
        ns = tuple(namespaces) or tuple(n.strip() for n in get("FERRYMAN_NAMESPACES").split(",") if n.strip())
        return Settings(
            namespaces=ns,
            prometheus_url=get("FERRYMAN_PROMETHEUS_URL").rstrip("/"),
            prometheus_namespace_label=get("FERRYMAN_PROMETHEUS_NAMESPACE_LABEL"),
            analysis_selector=get("FERRYMAN_ANALYSIS_SELECTOR"),
            resync_seconds=_positive("FERRYMAN_RESYNC_SECONDS", get("FERRYMAN_RESYNC_SECONDS")),
            workers=int(_positive("FERRYMAN_WORKERS", get("FERRYMAN_WORKERS"))),
            image=get("FERRYMAN_IMAGE"),
            image_pull_policy=_pull_policy(get("FERRYMAN_IMAGE_PULL_POLICY")),
            workload_env=_env_list(get("FERRYMAN_WORKLOAD_ENV")),
            ray_image=get("FERRYMAN_RAY_IMAGE"),
            kserve_runtime=get("FERRYMAN_KSERVE_RUNTIME"),
            grpc=_bool(get("FERRYMAN_GRPC")),
            preflight=_bool(get("FERRYMAN_PREFLIGHT")),
            preflight_ttl_seconds=float(get("FERRYMAN_PREFLIGHT_TTL_SECONDS")),
            leader_election=_bool(get("FERRYMAN_LEADER_ELECTION")),
            lease_name=get("FERRYMAN_LEASE_NAME"),
            lease_namespace=get("FERRYMAN_LEASE_NAMESPACE") or _default_lease_namespace(),
            lease_seconds=_positive("FERRYMAN_LEASE_SECONDS", get("FERRYMAN_LEASE_SECONDS")),
            health_address=get("FERRYMAN_HEALTH_ADDRESS"),
            identity=get("FERRYMAN_IDENTITY") or f"{socket.gethostname()}-{os.getpid()}",
            log_level=get("FERRYMAN_LOG_LEVEL").upper(),
            kubeconfig=kubeconfig,
        )
    except ValueError as err:
        raise SystemExit(f"ferryman-operator: invalid setting: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    epilog = "environment:\n" + "\n".join(f"  {k} (default {v[0]!r}): {v[1]}" for k, v in ENV.items())
    p = argparse.ArgumentParser(prog="python -m ferryman_operator", description="the ferryman ModelDeployment operator",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces",
                   help="watch this namespace (repeatable; overrides FERRYMAN_NAMESPACES)")
    return p
