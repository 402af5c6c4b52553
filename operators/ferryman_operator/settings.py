"""Operator settings: command-line flags override ``FERRYMAN_*`` environment variables override defaults.

Each setting is declared once, as a field of :class:`Settings`: its default, and in the field's metadata its
environment variable, meaning and parser. :data:`ENV` (name -> (default as text, meaning); the Helm chart
sets every one of them, docs/operator.md lists them) and :func:`from_env` are derived from those fields. A
field with a ``default_factory`` is computed when its variable is empty (the pod's namespace, the identity).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

DEFAULT_IMAGE = "ghcr.io/ferryman-dev/ferryman:0.1.0"
DEFAULT_RAY_IMAGE = "ghcr.io/ferryman-dev/ferryman-ray:0.1.0"

_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {text!r}")
        return value

    return parse


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _pull_policy(text: str) -> str:
    if text not in _PULL_POLICIES:
        raise ValueError(
            f"FERRYMAN_IMAGE_PULL_POLICY must be one of {', '.join(_PULL_POLICIES)}, got {text!r}"
        )
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
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and item["name"]
            and set(item) <= {"name", "value", "valueFrom"}
            and ("value" in item) != ("valueFrom" in item)
        ):
            raise ValueError(
                f"FERRYMAN_WORKLOAD_ENV[{i}] must be {{name, value}} or {{name, valueFrom}}, got {item!r}"
            )
        if "value" in item and not isinstance(item["value"], str):
            raise ValueError(f"FERRYMAN_WORKLOAD_ENV[{i}].value must be a string, got {item['value']!r}")
    return tuple(doc)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _default_lease_namespace() -> str:
    try:
        with open(_SA_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: Any) -> str:
    """A default as its environment variable would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value) if all(isinstance(v, str) for v in value) else json.dumps(list(value))
    return str(value)


def setting(
    env: str,
    meaning: str,
    default: Any = MISSING,
    *,
    parse: Callable[[str], Any] = str,
    default_factory: Callable[[], Any] | None = None,
    text: str | None = None,
) -> Any:
    """A :class:`Settings` field read from ``env`` with ``parse``; ``text``: the default as ``env`` spells it
    when :func:`_text` would not (an empty variable means the ``default_factory``)."""
    metadata = {"env": env, "meaning": meaning, "parse": parse, "text": text}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = setting(
        "FERRYMAN_NAMESPACES",
        "comma-separated namespaces to watch; empty = every namespace (cluster-wide)",
        (),
        parse=_names,
    )
    prometheus_url: str = setting(
        "FERRYMAN_PROMETHEUS_URL",
        "Prometheus HTTP API base URL for rollout analysis; empty = no analysis "
        "(rollouts hold, never promote on missing data)",
        "",
        parse=lambda t: t.rstrip("/"),
    )
    prometheus_namespace_label: str = setting(
        "FERRYMAN_PROMETHEUS_NAMESPACE_LABEL",
        "series label carrying the Kubernetes namespace "
        "(added by ServiceMonitor/PodMonitor scraping); empty = none",
        "namespace",
    )
    analysis_selector: str = setting(
        "FERRYMAN_ANALYSIS_SELECTOR",
        "extra PromQL label matchers for the analysis, e.g. 'container=\"gateway\"'",
        "",
    )
    resync_seconds: float = setting(
        "FERRYMAN_RESYNC_SECONDS",
        "safety-net pass over every resource, spread over the period (reconciles "
        "are driven by watch events and analysis timers, not by this)",
        600.0,
        parse=_positive("FERRYMAN_RESYNC_SECONDS"),
    )
    workers: int = setting(
        "FERRYMAN_WORKERS",
        "reconciles in flight at once",
        16,
        parse=lambda t: int(_positive("FERRYMAN_WORKERS")(t)),
    )
    image: str = setting(
        "FERRYMAN_IMAGE", "ferryman image for version servers and the gateway", DEFAULT_IMAGE
    )
    image_pull_policy: str = setting(
        "FERRYMAN_IMAGE_PULL_POLICY",
        "pull policy of the version servers and gateways: Always, IfNotPresent or Never",
        "IfNotPresent",
        parse=_pull_policy,
    )
    workload_env: tuple[dict[str, Any], ...] = setting(
        "FERRYMAN_WORKLOAD_ENV",
        "JSON list of Kubernetes EnvVars added to every version server, e.g. the S3 "
        "endpoint and credentials (valueFrom a Secret in the model's namespace)",
        (),
        parse=_env_list,
        text="[]",
    )
    ray_image: str = setting(
        "FERRYMAN_RAY_IMAGE", "Ray image (ferryman + ray[serve]) for RayService clusters", DEFAULT_RAY_IMAGE
    )
    kserve_runtime: str = setting(
        "FERRYMAN_KSERVE_RUNTIME", "ClusterServingRuntime used by kserve InferenceServices", "ferryman-onnx"
    )
    grpc: bool = setting(
        "FERRYMAN_GRPC",
        "also serve the Open Inference Protocol v2 over gRPC on port 8081 of every gateway and "
        "version server (native and kserve runtimes), routed like REST",
        False,
        parse=_bool,
    )
    preflight: bool = setting(
        "FERRYMAN_PREFLIGHT",
        "check that http(s) model URIs answer before rolling them out",
        True,
        parse=_bool,
    )
    preflight_ttl_seconds: float = setting(
        "FERRYMAN_PREFLIGHT_TTL_SECONDS", "how long a model URI check result is reused", 60.0, parse=float
    )
    leader_election: bool = setting(
        "FERRYMAN_LEADER_ELECTION",
        "elect one active replica through a coordination.k8s.io Lease",
        True,
        parse=_bool,
    )
    lease_name: str = setting("FERRYMAN_LEASE_NAME", "name of the leader-election Lease", "ferryman-operator")
    lease_namespace: str = setting(
        "FERRYMAN_LEASE_NAMESPACE",
        "namespace of the Lease; empty = the pod's namespace (or 'default')",
        default_factory=_default_lease_namespace,
    )
    lease_seconds: float = setting(
        "FERRYMAN_LEASE_SECONDS",
        "lease duration; a standby takes over this long after the leader vanished",
        15.0,
        parse=_positive("FERRYMAN_LEASE_SECONDS"),
    )
    health_address: str = setting(
        "FERRYMAN_HEALTH_ADDRESS",
        "host:port of the liveness endpoint (GET /healthz); empty = off",
        "0.0.0.0:8081",
    )
    identity: str = setting(
        "FERRYMAN_IDENTITY",
        "this replica's identity in the Lease and Events; empty = hostname-pid",
        default_factory=_default_identity,
    )
    log_level: str = setting(
        "FERRYMAN_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", "INFO", parse=lambda t: t.upper()
    )
    kubeconfig: str | None = None  # a command-line flag only

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _default_text(f: Any) -> str:
    if f.metadata["text"] is not None:
        return str(f.metadata["text"])
    return "" if f.default is MISSING else _text(f.default)


# env var -> (default as text, meaning): derived from the fields above
ENV: dict[str, tuple[str, str]] = {
    f.metadata["env"]: (_default_text(f), f.metadata["meaning"])
    for f in fields(Settings)
    if "env" in f.metadata
}


def from_env(
    env: Mapping[str, str] | None = None, *, kubeconfig: str | None = None, namespaces: Sequence[str] = ()
) -> Settings:
    """Settings from ``env`` (default: os.environ); explicit ``namespaces`` override FERRYMAN_NAMESPACES."""
    source = os.environ if env is None else env
    values: dict[str, Any] = {"kubeconfig": kubeconfig}
    try:
        for f in fields(Settings):
            name = f.metadata.get("env")
            if name is None:
                continue
            text = source.get(name, ENV[name][0]).strip()
            if not text and f.default is MISSING:  # computed: the pod's namespace, the identity
                continue
            values[f.name] = f.metadata["parse"](text)
    except ValueError as err:
        raise SystemExit(f"ferryman-operator: invalid setting: {err}") from err
    if namespaces:
        values["namespaces"] = tuple(namespaces)
    return Settings(**values)


def build_parser() -> argparse.ArgumentParser:
    epilog = "environment:\n" + "\n".join(f"  {k} (default {v[0]!r}): {v[1]}" for k, v in ENV.items())
    p = argparse.ArgumentParser(
        prog="python -m ferryman_operator",
        description="the ferryman ModelDeployment operator",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable; overrides FERRYMAN_NAMESPACES)",
    )
    return p
