"""The Ray Serve application config of a ModelDeployment (KubeRay ``serveConfigV2``): pure, no Ray import.

One function for both paths, so they cannot drift apart: ``ferryman up --runtime ray`` deploys
:func:`serve_config` on a local Ray instance, and the operator writes it, as YAML, into a KubeRay
``RayService`` ``spec.serveConfigV2``. Both run the builder named by ``import_path``
(``ferryman_runtimes.ray.app:build``) with the same ``args``.

Traffic lives in the ingress deployment's ``user_config`` (:func:`route_config`): a rollout step changes
only that field, and Ray Serve applies it with ``reconfigure()`` on the running replicas (no restart).
Batching lives in each version deployment's ``user_config`` the same way.

It lives in the core (moved from ``ferryman_runtimes.ray.config``) because the operator may not import the
runtimes: the Ray runtime and the operator's RayService backend both call it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ferryman.rollout import Phase, RolloutState, start, table_for
from ferryman.routing import RouteTable
from ferryman.spec import Batching, ModelDeployment, Strategy

IMPORT_PATH = "ferryman_runtimes.ray.app:build"
INGRESS = "ingress"
VERSION_PREFIX = "version-"
DEFAULT_METRICS_DIR = "/tmp/ferryman-metrics"
ENV_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Ray's own throughput mode: the ingress replica serves HTTP itself ("direct ingress", no proxy hop),
# user code runs on the replica's event loop, gRPC between deployments, buffered request logs.
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
# A version whose one-row compute takes less than this runs inside the ingress replica: a handle call to
# another replica costs ~1 ms of CPU, far more than an 11 microsecond tree-ensemble run.
DEFAULT_INLINE_BELOW_MS = 1.0
DISPATCH_MODES = ("inline", "remote")

_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def version_deployment(version: str) -> str:
    return f"{VERSION_PREFIX}{version}"


def parse_cpu(quantity: str) -> float:
    """Kubernetes CPU quantity ("2", "0.5", "500m") as a number of CPUs."""
    m = _CPU.match(quantity)
    if not m:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    value = float(m.group(1))
    return value / 1000.0 if m.group(2) else value


def parse_memory(quantity: str) -> int:
    """Kubernetes memory quantity ("512Mi", "1G") in bytes."""
    m = _MEMORY.match(quantity)
    if not m:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])


# -- traffic ----------------------------------------------------------------------------------------
def route_config(md: ModelDeployment, state: RolloutState | None = None) -> dict[str, Any]:
    """The ingress ``user_config``: the part of a rollout state that decides routing (JSON-safe)."""
    s = state if state is not None else start(md, now=0.0)[0]
    return {
        "strategy": s.strategy.value,
        "phase": s.phase.value,
        "stable": s.stable,
        "candidate": s.candidate,
        "weights": dict(s.weights),
    }


def table_from_route_config(md: ModelDeployment, cfg: dict[str, Any]) -> RouteTable:
    """Inverse of :func:`route_config`: the route table the ingress applies (via ``rollout.table_for``)."""
    try:
        state = RolloutState(
            strategy=Strategy(cfg["strategy"]),
            phase=Phase(cfg["phase"]),
            stable=str(cfg["stable"]),
            candidate=cfg.get("candidate"),
            weights={str(k): int(v) for k, v in cfg["weights"].items()},
        )
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"invalid ingress user_config {cfg!r}: {err}") from err
    return table_for(md, state)


def batching_config(md: ModelDeployment, version: str | None = None) -> dict[str, Any]:
    """A version deployment's ``user_config``: ``@serve.batch`` settings from the version's batching (its own
    or ``spec.batching``; the defaults when neither is set: a remote version deployment always batches)."""
    b = (md.spec.batching_for(version) if version is not None else md.spec.batching) or Batching()
    return {"max_batch_size": b.max_batch_size, "batch_wait_timeout_s": b.max_delay_ms / 1000.0}


# -- the application --------------------------------------------------------------------------------
def _cpus(value: float) -> float:
    """Round a CPU request down to 1/1000 (so scaled requests never add up to more than what fits)."""
    return math.floor(value * 1000) / 1000


def _cpu_scale(md: ModelDeployment, cpus: float | None) -> float:
    """Factor applied to every CPU request so the whole app fits in ``cpus`` (1.0 when it fits or unset)."""
    if cpus is None:
        return 1.0
    wanted = _ingress_cpus(md) * _ingress_replicas(md)
    wanted += sum(parse_cpu(v.resources.cpu) * max(v.replicas, 1) for v in md.spec.versions)
    return 1.0 if wanted <= cpus else cpus / wanted


def _ingress_cpus(md: ModelDeployment) -> float:
    # The ingress runs cheap versions in-process, so it asks for what the largest version asks for.
    return max(parse_cpu(v.resources.cpu) for v in md.spec.versions)


def _ingress_replicas(md: ModelDeployment) -> int:
    return max(1, max(v.replicas for v in md.spec.versions))


def _replicas(count: int) -> dict[str, Any]:
    if count == 0:  # scale to zero: Ray starts a replica when a request needs this version
        return {
            "autoscaling_config": {
                "min_replicas": 0,
                "initial_replicas": 0,
                "max_replicas": 1,
                "target_ongoing_requests": 4,
            }
        }
    return {"num_replicas": count}


def application(
    md: ModelDeployment,
    *,
    state: RolloutState | None = None,
    cpus: float | None = None,
    metrics_dir: str = DEFAULT_METRICS_DIR,
    inline_below_ms: float = DEFAULT_INLINE_BELOW_MS,
    dispatch: Mapping[str, str] | None = None,
    route_prefix: str = "/",
) -> dict[str, Any]:
    """One entry of ``applications``: the ingress and one deployment per version, all from the spec.

    ``dispatch`` forces a version ``"inline"`` (computed in the ingress) or ``"remote"`` (through its
    deployment); the others are decided by measuring their one-row compute against ``inline_below_ms``.
    """
    known = {v.name for v in md.spec.versions}
    for version, mode in (dispatch or {}).items():
        if version not in known or mode not in DISPATCH_MODES:
            raise ValueError(
                f"dispatch: {version}={mode} (versions: {sorted(known)}; modes: {DISPATCH_MODES})"
            )
    scale = _cpu_scale(md, cpus)
    limits = md.spec.limits
    deployment = md.to_dict()
    deployment.pop("status", None)
    ingress: dict[str, Any] = {
        "name": INGRESS,
        "num_replicas": _ingress_replicas(md),
        "max_ongoing_requests": limits.max_in_flight,
        "user_config": route_config(md, state),
        "ray_actor_options": {"num_cpus": _cpus(_ingress_cpus(md) * scale)},
        "graceful_shutdown_timeout_s": limits.request_timeout_seconds,
    }
    deployments = [ingress]
    for v in md.spec.versions:
        batching = batching_config(md, v.name)
        actor: dict[str, Any] = {"num_cpus": _cpus(parse_cpu(v.resources.cpu) * scale)}
        if cpus is None:  # on a cluster the memory request is scheduled; locally it would only get in the way
            actor["memory"] = parse_memory(v.resources.memory)
        deployments.append(
            {
                "name": version_deployment(v.name),
                **_replicas(v.replicas),
                "max_ongoing_requests": max(2 * batching["max_batch_size"], 8),
                "user_config": batching,
                "ray_actor_options": actor,
                "graceful_shutdown_timeout_s": limits.request_timeout_seconds,
            }
        )
    return {
        "name": md.name,
        "route_prefix": route_prefix,
        "import_path": IMPORT_PATH,
        "args": {
            "deployment": deployment,
            "inline_below_ms": inline_below_ms,
            "dispatch": dict(dispatch or {}),
        },
        "runtime_env": {"env_vars": {ENV_METRICS_DIR: metrics_dir}},
        # Per-request access logs cost ~9% of the ingress's CPU; our metrics already count every request.
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
        "deployments": deployments,
    }


def serve_config(
    md: ModelDeployment,
    *,
    state: RolloutState | None = None,
    cpus: float | None = None,
    metrics_dir: str = DEFAULT_METRICS_DIR,
    inline_below_ms: float = DEFAULT_INLINE_BELOW_MS,
    dispatch: Mapping[str, str] | None = None,
    host: str = "0.0.0.0",
    port: int = 8000,
) -> dict[str, Any]:
    """The full Ray Serve config (``serve deploy`` / KubeRay ``serveConfigV2``) for one ModelDeployment.

    ``state`` is the rollout state whose traffic split the ingress applies (default: the spec's first
    step); ``cpus`` scales CPU requests down to fit a small local Ray instance (None on a cluster).
    """
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            application(
                md,
                state=state,
                cpus=cpus,
                metrics_dir=metrics_dir,
                inline_below_ms=inline_below_ms,
                dispatch=dispatch,
            )
        ],
    }


def serve_config_yaml(md: ModelDeployment, **kwargs: Any) -> str:
    """:func:`serve_config` as the YAML string KubeRay expects in ``RayService.spec.serveConfigV2``."""
    import yaml

    return str(yaml.safe_dump(serve_config(md, **kwargs), sort_keys=False))
