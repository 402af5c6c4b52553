"""Deploy a ModelDeployment on a Ray instance started in this process, and clean that instance up.

:func:`deploy` deploys :func:`ferryman.serve_config.serve_config` through the Serve controller's
``deploy_apps`` — the call KubeRay's ``serveConfigV2`` ends in — so local mode and the cluster run the same
application. Ray's throughput mode is switched on before Ray starts: the ingress replica serves HTTP itself
on ``port`` (direct ingress), and the classic Serve proxy stays up on ``proxy_port`` as the slower path.
:func:`shutdown` stops Serve and Ray and reaps what they leave behind. The command line around it is
:mod:`.launcher`; the subprocess harness for benchmarks and tests is :mod:`.local`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferryman import processes
from ferryman.errors import FerrymanError
from ferryman.rollout import RolloutState, start
from ferryman.serve_config import THROUGHPUT_ENV, serve_config
from ferryman.spec import ModelDeployment, load_deployment

log = logging.getLogger("ferryman.ray")

OBJECT_STORE_BYTES = 96 * 1024 * 1024  # only small numpy feeds travel through Ray; keep the store small
DEPLOY_TIMEOUT_S = 300.0
ENV_INSTANCE = "FERRYMAN_RAY_INSTANCE"  # marks every process of one local Ray instance (for clean-up)


def ray_environment(*, port: int, ingress_replicas: int) -> dict[str, str]:
    """Environment for the local Ray instance: throughput mode, direct ingress on ``port`` (and up)."""
    return {
        **THROUGHPUT_ENV,
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + ingress_replicas),
        # no load balancer to deregister from locally: stop in a second, not Ray's 30 s drain window
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_DEDUP_LOGS": "0",
    }


@dataclass
class Deployed:
    md: ModelDeployment
    url: str
    proxy_url: str
    metrics_dir: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    client: Any = field(repr=False, default=None)  # the Serve controller client that deployed ``config``
    hub: Any = field(repr=False, default=None)  # the stats hub actor, when a driver reads the requests

    def redeploy(self, route: dict[str, Any]) -> None:
        """Apply a new ingress ``user_config`` (traffic split) in place: the same config otherwise."""
        from ray.serve.schema import ServeDeploySchema

        from ferryman_runtimes.ray.driver import with_route

        self.client.deploy_apps(ServeDeploySchema.model_validate(with_route(self.config, route)))


def deploy(
    spec: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    proxy_port: int | None = None,
    cpus: float | None = None,
    inline_below_ms: float | None = None,
    dispatch: dict[str, str] | None = None,
    timeout: float = DEPLOY_TIMEOUT_S,
    state: RolloutState | None = None,
    stats_hub: bool = False,
) -> Deployed:
    """Start Ray in this process and deploy the spec; returns once the ingress answers on ``port``.

    ``state``: the rollout state whose split to deploy (default: the spec's first step). ``stats_hub``:
    start the stats hub actor and have every ingress replica ship its finished requests to it.
    """
    md = load_deployment(spec)
    cpus = float(cpus if cpus is not None else min(os.cpu_count() or 2, 2))
    proxy_port = proxy_port or processes.free_port_below_ephemeral(host)
    metrics_dir = tempfile.mkdtemp(prefix="ferryman-ray-metrics-")
    kwargs: dict[str, Any] = {} if inline_below_ms is None else {"inline_below_ms": inline_below_ms}
    config = serve_config(
        md,
        state=state or start(md, now=time.time())[0],
        cpus=cpus,
        metrics_dir=metrics_dir,
        dispatch=dispatch,
        host=host,
        port=proxy_port,
        **kwargs,
    )
    ingress = config["applications"][0]["deployments"][0]
    os.environ.update(ray_environment(port=port, ingress_replicas=int(ingress["num_replicas"])))
    os.environ.setdefault(ENV_INSTANCE, uuid.uuid4().hex)
    from ferryman.metrics_exposition import prepare_multiprocess

    prepare_multiprocess(metrics_dir)
    from ray.serve.schema import ServeDeploySchema

    from ferryman_runtimes._compat.ray_serve import serve_start

    schema = ServeDeploySchema.model_validate(config)
    _start_ray(num_cpus=max(1, math.ceil(cpus)))
    hub = None
    if stats_hub:
        from ferryman_runtimes.ray.stats import NAMESPACE, SHIP_INTERVAL_S, hub_name, start_hub

        hub = start_hub(md.name)  # before the replicas that look it up
        config["applications"][0]["args"]["stats"] = {
            "actor": hub_name(md.name),
            "namespace": NAMESPACE,
            "interval_s": SHIP_INTERVAL_S,
        }
        schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    _wait_running(md.name, timeout=timeout)
    url = f"http://{host}:{port}"
    _wait_http(f"{url}/v2/health/ready", timeout=timeout)
    return Deployed(
        md=md,
        url=url,
        proxy_url=f"http://{host}:{proxy_port}",
        metrics_dir=metrics_dir,
        config=config,
        client=client,
        hub=hub,
    )


def _start_ray(*, num_cpus: int, attempts: int = 3) -> None:
    """A fresh local Ray instance. On a saturated machine its agents can miss the raylet's start-up
    deadline (the raylet then exits and ``ray.init`` times out): try again, a few times."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
                log_to_driver=os.environ.get("FERRYMAN_RAY_LOGS") == "1",
            )
            return
        except Exception as err:
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == attempts or "timed out during startup" not in str(err):
                raise FerrymanError(f"could not start a local Ray instance: {err}") from err
            log.warning("local Ray did not start (attempt %d of %d): %s", attempt, attempts, err)


def _wait_running(app: str, *, timeout: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    status = "NOT_STARTED"
    while time.monotonic() < deadline:
        info = serve.status().applications.get(app)
        status = str(info.status) if info else "NOT_STARTED"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED") or status.endswith("UNHEALTHY"):
            assert info is not None
            raise FerrymanError(f"Ray Serve could not deploy {app!r}: {info.message}")
        time.sleep(0.5)
    raise FerrymanError(f"Ray Serve application {app!r} not running after {timeout:.0f}s (status {status})")


def _wait_http(url: str, *, timeout: float) -> None:
    try:
        processes.wait_http(url, timeout=timeout, interval=0.2)
    except processes.ServerFailed as err:
        raise FerrymanError(f"Ray Serve is not ready: {err}") from err


def shutdown(deployed: Deployed | None = None) -> None:
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()
    ray.shutdown()
    instance = os.environ.get(ENV_INSTANCE)
    if instance:
        reap(instance)
    if deployed is not None:
        from ferryman.metrics_exposition import cleanup_multiprocess

        cleanup_multiprocess(deployed.metrics_dir)


def instance_processes(instance: str) -> list[int]:
    """PIDs (other than this one) whose environment carries ``FERRYMAN_RAY_INSTANCE=instance`` (Linux)."""
    marker = f"{ENV_INSTANCE}={instance}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def reap(instance: str, *, grace: float = 5.0) -> None:
    """Stop what ``ray.shutdown()`` left of this instance (its per-node agents can outlive the raylet)."""
    deadline = time.monotonic() + grace
    while (left := instance_processes(instance)) and time.monotonic() < deadline:
        time.sleep(0.25)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
