"""``ferryman up SPEC --runtime ray`` (``run``, also ``python -m ferryman_runtimes.ray``): deploy
(:mod:`.deploy`), print the endpoints, serve until SIGINT/SIGTERM, shut Ray down.

With a state directory (``ferryman up`` always passes one) it also drives the rollout (:mod:`.driver`): the
ingress replicas ship their finished requests to a stats hub actor (:mod:`.stats`), the shared
``RolloutController`` ticks on them and applies each step as a new ingress ``user_config``, and the admin API
listens on the admin port. Without one, the spec's first step is served.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferryman.errors import FerrymanError
from ferryman_runtimes.ray.deploy import Deployed, deploy, shutdown

if TYPE_CHECKING:
    from ferryman_runtimes.ray.driver import Driver


def run(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    proxy_port: int | None = None,
    cpus: float | None = None,
    inline_below_ms: float | None = None,
    dispatch: dict[str, str] | None = None,
    admin_host: str | None = None,
    admin_port: int | None = None,
    state_dir: str | None = None,
    telemetry: bool = True,
    api_keys: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
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
        raise FerrymanError(
            "--api-keys and --tls-cert/--tls-key are not supported with --runtime ray "
            "(put the Ray ingress behind a TLS-terminating, authenticating proxy)"
        )

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
            deployed = deploy(
                spec,
                host=host,
                port=port,
                proxy_port=proxy_port,
                cpus=cpus,
                inline_below_ms=inline_below_ms,
                dispatch=dispatch,
                state=driver.state if driver else None,
                stats_hub=driver is not None,
            )
        console.print(
            f"[green]ferryman[/] {deployed.md.name} on Ray Serve: {deployed.url} "
            f"(direct ingress; Serve proxy {deployed.proxy_url}, metrics {deployed.url}/metrics)"
        )
        for s in previous:  # ray.init installs its own SIGTERM handler (an abrupt exit); take it back
            signal.signal(s, stop)
        if driver is None:
            print(f"READY {deployed.url}", flush=True)
            while not stopping:
                time.sleep(0.2)
        else:
            _drive(
                deployed,
                driver,
                admin_host=admin_host or host,
                admin_port=admin_port,
                console=console,
                stopping=stopping,
            )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutdown(deployed)


def _drive(
    deployed: Deployed,
    driver: Driver,
    *,
    admin_host: str,
    admin_port: int | None,
    console: Any,
    stopping: list[int],
) -> None:
    """Run the rollout driver and the admin API (in this process) until a signal arrives."""
    import asyncio

    from ferryman_runtimes.ray.driver import serve_admin

    ingress = deployed.config["applications"][0]["deployments"][0]
    driver.attach(hub=deployed.hub, deploy=deployed.redeploy, deployed_route=ingress["user_config"])
    port = admin_port or int(deployed.url.rsplit(":", 1)[1]) + int(ingress["num_replicas"]) + 1
    console.print(
        f"[green]rollout driver[/] {driver.state.phase.value} {driver.state.weights}; admin API "
        f"http://{admin_host}:{port} (token: FERRYMAN_ADMIN_TOKEN or {driver.state_dir}/token.json)"
    )
    print(f"READY {deployed.url}", flush=True)
    asyncio.run(serve_admin(driver, host=admin_host, port=port, gateway_url=deployed.url, stopping=stopping))
