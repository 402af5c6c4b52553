"""Run a ModelDeployment on a local Ray instance (``ferryman up SPEC --runtime ray``), and start/stop helpers.

The launcher deploys :func:`ferryman.serve_config.serve_config` through the Serve controller's
``apply_config`` — the call KubeRay's ``serveConfigV2`` ends in — so local mode and the cluster run the
same application. Ray's throughput mode is switched on before Ray starts: the ingress replica serves HTTP
itself on ``--port`` (direct ingress), and the classic Serve proxy stays up on ``--proxy-port`` as the
slower path. :func:`start_local` runs all of this in a subprocess and returns once it answers.

With a state directory (``ferryman up`` always passes one) the launcher also drives the rollout
(:mod:`.driver`): the ingress replicas ship their finished requests to a stats hub actor
(:mod:`.stats`), the gateway's ``RolloutController`` ticks on them and applies each step as a new ingress
``user_config``, and the admin API listens on the admin port. Without one, the spec's first step is served.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferryman import processes
from ferryman.errors import FerrymanError
from ferryman.rollout import RolloutState, start
from ferryman.serve_config import THROUGHPUT_ENV, serve_config
from ferryman.spec import ModelDeployment, load_deployment

if TYPE_CHECKING:
    from ferryman_runtimes.ray.driver import Driver

log = logging.getLogger("ferryman.ray")

OBJECT_STORE_BYTES = 96 * 1024 * 1024  # only small numpy feeds travel through Ray; keep the store small
DEPLOY_TIMEOUT_S = 300.0
ENV_INSTANCE = "FERRYMAN_RAY_INSTANCE"  # marks every process of one local Ray instance (for clean-up)


def ray_environment(*, port: int, ingress_replicas: int) -> dict[str, str]:
    """Environment for the local Ray instance: throughput mode, direct ingress on ``port`` (and up)."""
    return {**THROUGHPUT_ENV,
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + ingress_replicas),
            # no load balancer to deregister from locally: stop in a second, not Ray's 30 s drain window
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            "RAY_DEDUP_LOGS": "0"}


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


def deploy(spec: str | Path, *, host: str = "127.0.0.1", port: int = 8080, proxy_port: int | None = None,
           cpus: float | None = None, inline_below_ms: float | None = None, dispatch: dict[str, str] | None = None,
           timeout: float = DEPLOY_TIMEOUT_S, state: RolloutState | None = None, stats_hub: bool = False) -> Deployed:
    """Start Ray in this process and deploy the spec; returns once the ingress answers on ``port``.

    ``state``: the rollout state whose split to deploy (default: the spec's first step). ``stats_hub``:
    start the stats hub actor and have every ingress replica ship its finished requests to it.
    """
    md = load_deployment(spec)
    cpus = float(cpus if cpus is not None else min(os.cpu_count() or 2, 2))
    proxy_port = proxy_port or processes.free_port_below_ephemeral(host)
    metrics_dir = tempfile.mkdtemp(prefix="ferryman-ray-metrics-")
    kwargs: dict[str, Any] = {} if inline_below_ms is None else {"inline_below_ms": inline_below_ms}
    config = serve_config(md, state=state or start(md, now=time.time())[0], cpus=cpus, metrics_dir=metrics_dir,
                          dispatch=dispatch, host=host, port=proxy_port, **kwargs)
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
        config["applications"][0]["args"]["stats"] = {"actor": hub_name(md.name), "namespace": NAMESPACE,
                                                      "interval_s": SHIP_INTERVAL_S}
        schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    _wait_running(md.name, timeout=timeout)
    url = f"http://{host}:{port}"
    _wait_http(f"{url}/v2/health/ready", timeout=timeout)
    return Deployed(md=md, url=url, proxy_url=f"http://{host}:{proxy_port}", metrics_dir=metrics_dir, config=config,
                    client=client, hub=hub)


def _start_ray(*, num_cpus: int, attempts: int = 3) -> None:
    """A fresh local Ray instance. On a saturated machine its agents can miss the raylet's start-up
    deadline (the raylet then exits and ``ray.init`` times out): try again, a few times."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                     log_to_driver=os.environ.get("FERRYMAN_RAY_LOGS") == "1")
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


def run(spec: str, *, host: str = "127.0.0.1", port: int = 8080, proxy_port: int | None = None,
        cpus: float | None = None, inline_below_ms: float | None = None, dispatch: dict[str, str] | None = None,
        admin_host: str | None = None, admin_port: int | None = None, state_dir: str | None = None,
        telemetry: bool = True, api_keys: str | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """``ferryman up SPEC --runtime ray``: deploy, print the endpoints, serve until SIGINT/SIGTERM.

    Takes the keyword arguments ``ferryman up`` passes every runtime. With ``state_dir`` (``ferryman up``
    always passes one) the rollout is driven here, as the gateway runtime does, and the admin API listens on
    ``admin_host:admin_port`` (default: the first port after the direct-ingress range, ``port`` + ingress
    replicas + 1). Without it the spec's first rollout step is served as is (benchmarks; on KubeRay the
    operator drives the ingress ``user_config``).
    ``telemetry=False`` is accepted for symmetry; Ray replicas always record ferryman's metrics.
    """
    from rich.console import Console

    if api_keys or tls_cert or tls_key:
        raise FerrymanError("--api-keys and --tls-cert/--tls-key are not supported with --runtime ray "
                            "(put the Ray ingress behind a TLS-terminating, authenticating proxy)")

    console = Console(stderr=True)
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    deployed = None
    driver = None
    try:
        if state_dir is not None:  # resume or start the rollout first: the first deploy carries its split
            from ferryman_runtimes.ray.driver import prepare

            driver = prepare(Path(spec), state_dir=Path(state_dir))
        with console.status("starting Ray and deploying (Ray takes 10-30 s to start)..."):
            deployed = deploy(spec, host=host, port=port, proxy_port=proxy_port, cpus=cpus,
                              inline_below_ms=inline_below_ms, dispatch=dispatch,
                              state=driver.state if driver else None, stats_hub=driver is not None)
        console.print(f"[green]ferryman[/] {deployed.md.name} on Ray Serve: {deployed.url} "
                      f"(direct ingress; Serve proxy {deployed.proxy_url}, metrics {deployed.url}/metrics)")
        for s in previous:  # ray.init installs its own SIGTERM handler (an abrupt exit); take it back
            signal.signal(s, stop)
        if driver is None:
            print(f"READY {deployed.url}", flush=True)
            while not stopping:
                time.sleep(0.2)
        else:
            _drive(deployed, driver, admin_host=admin_host or host, admin_port=admin_port, console=console,
                   stopping=stopping)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutdown(deployed)


def _drive(deployed: Deployed, driver: Driver, *, admin_host: str, admin_port: int | None, console: Any,
           stopping: list[int]) -> None:
    """Run the rollout driver and the admin API (in this process) until a signal arrives."""
    import asyncio

    from ferryman_runtimes.ray.driver import serve_admin

    ingress = deployed.config["applications"][0]["deployments"][0]
    driver.attach(hub=deployed.hub, deploy=deployed.redeploy, deployed_route=ingress["user_config"])
    port = admin_port or int(deployed.url.rsplit(":", 1)[1]) + int(ingress["num_replicas"]) + 1
    console.print(f"[green]rollout driver[/] {driver.state.phase.value} {driver.state.weights}; admin API "
                  f"http://{admin_host}:{port} (token: FERRYMAN_ADMIN_TOKEN or {driver.state_dir}/token.json)")
    print(f"READY {deployed.url}", flush=True)
    asyncio.run(serve_admin(driver, host=admin_host, port=port, gateway_url=deployed.url, stopping=stopping))


# -- a handle for benchmarks and tests: the launcher in its own process ----------------------------
@dataclass
class LocalRay:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    instance: str = ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the launcher shuts Serve and Ray down), then SIGKILL its process group if it hangs."""
        processes.stop(self.process, timeout=timeout, kill_group=True)  # SIGTERM to the launcher alone
        if self.instance:
            reap(self.instance, grace=0.0)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalRay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(spec: str | Path, *, port: int, host: str = "127.0.0.1", extra: list[str] | None = None) -> list[str]:
    """The exact command :func:`start_local` runs (``python -m ferryman_runtimes.ray``)."""
    return [sys.executable, "-m", "ferryman_runtimes.ray", str(spec), "--host", host, "--port", str(port),
            *(extra or [])]


def start_local(spec_path: str | Path, port: int, *, host: str = "127.0.0.1", timeout: float = DEPLOY_TIMEOUT_S,
                extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> LocalRay:
    """Run the spec on a fresh local Ray instance in a subprocess; return once it is ready. Call ``.stop()``."""
    fd, name = tempfile.mkstemp(prefix="ferryman-ray-", suffix=".log")
    log_path = Path(name)
    instance = uuid.uuid4().hex
    with os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(command(spec_path, port=port, host=host, extra=extra_args),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), ENV_INSTANCE: instance})
    handle = LocalRay(url=f"http://{host}:{port}", process=process, log_path=log_path, instance=instance)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FerrymanError(f"the Ray launcher exited with {process.returncode}:\n{handle.output()[-4000:]}")
            if "READY " in handle.output():
                return handle
            time.sleep(0.3)
        raise FerrymanError(f"the Ray launcher was not ready within {timeout:.0f}s:\n{handle.output()[-4000:]}")
    except BaseException:
        handle.stop()
        raise
