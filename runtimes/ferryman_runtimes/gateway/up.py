"""`ferryman up`: the whole spec on one machine — gateway, every version in-process, rollout driver, admin
API."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferryman import metrics
from ferryman.accounting import Accounting
from ferryman.dataplane import DataPlane, repository_for
from ferryman.rollout import RolloutState, table_for
from ferryman.spec import ModelDeployment, load_deployment
from ferryman.statefile import read_json, write_json
from ferryman.telemetry import CompositeObserver, RequestObserver, Settle, deferred
from ferryman_runtimes.asgi.security import ApiKeys, protect
from ferryman_runtimes.asgi.tls import tls_options
from ferryman_runtimes.gateway.admin import AdminApp
from ferryman_runtimes.gateway.app import GatewayApp
from ferryman_runtimes.gateway.target import GatewayTarget
from ferryman_runtimes.native.server import spec_batchers, uvicorn_options
from ferryman_runtimes.rollout_controller import RolloutController

log = logging.getLogger("ferryman.up")

ADMIN_FILE = "admin.json"


@dataclass
class Platform:
    md: ModelDeployment
    gateway: GatewayApp
    controller: RolloutController
    admin: AdminApp
    accounting: Accounting
    token: str
    extras: dict[str, Any]


def admin_token(state_dir: Path) -> str:
    """The token from FERRYMAN_ADMIN_TOKEN, or one generated once and kept (0600) in the state dir."""
    env = os.environ.get("FERRYMAN_ADMIN_TOKEN")
    if env:
        return env
    saved = read_json(state_dir / "token.json")
    if saved and isinstance(saved.get("token"), str):
        return str(saved["token"])
    token = secrets.token_urlsafe(32)
    write_json(state_dir / "token.json", {"token": token})
    return token


def build_platform(
    spec_path: Path,
    *,
    state_dir: Path,
    observers: list[RequestObserver] | None = None,
    tick_seconds: float = 0.25,
    progress: bool = False,
    telemetry: bool = True,
) -> Platform:
    md = load_deployment(spec_path)
    repo = repository_for(md, progress=progress)
    settle = (
        Settle()
    )  # the readers' hook (accounting windows, scrapes), bound to the deferred observer's drain
    accounting = Accounting(settle=settle)
    extras: dict[str, Any] = {}
    all_observers: list[RequestObserver] = [accounting, *(observers or [])]
    hooks = _observability(md, repo, extras, settle=settle) if telemetry else []
    all_observers.extend(hooks)
    # reported once per loop turn, after the answers
    observer = deferred(CompositeObserver(*all_observers), settle=settle)
    routes = extras.pop("routes", {})
    gateway = GatewayApp(
        DataPlane(repo, limits=md.spec.limits),
        table_for(md, _placeholder(md)),
        observer=observer,
        extra_routes=routes,
    )
    gateway.batchers = spec_batchers(
        md, repo, metrics.default()
    )  # versions with batching on (docs/batching.md)
    extras.setdefault("closers", []).extend(b.close for b in gateway.batchers.values())
    on_change = extras.get("on_change")
    controller = RolloutController(
        md=md,
        spec_path=spec_path,
        target=GatewayTarget(gateway),
        accounting=accounting,
        state_path=state_dir / f"{md.name}.rollout.json",
        drift=extras.get("drift"),
        on_change=on_change,
        on_reload=extras.get("on_reload"),
        on_reload_result=extras.get("on_reload_result"),
        tick_seconds=tick_seconds,
    )
    token = admin_token(state_dir)
    return Platform(md, gateway, controller, AdminApp(controller, token=token), accounting, token, extras)


def _placeholder(md: ModelDeployment) -> RolloutState:
    from ferryman.rollout import start

    return start(md, now=0.0)[0]


def _observability(
    md: ModelDeployment, repo: Any, extras: dict[str, Any], *, settle: Settle
) -> list[RequestObserver]:
    """Metrics and drift, when the observability modules are present (they are optional plug-ins)."""
    observers: list[RequestObserver] = []
    try:
        module = importlib.import_module("ferryman_runtimes.gateway.observability")
    except ModuleNotFoundError:
        return observers
    attached: list[RequestObserver] = module.attach(md, repo, extras, settle=settle)
    return attached


async def serve(
    platform: Platform,
    *,
    host: str,
    port: int,
    admin_host: str,
    admin_port: int,
    state_dir: Path,
    api_keys: str | None = None,
    tls: dict[str, Any] | None = None,
    grpc_port: int | None = None,
) -> None:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # one process, two servers: we own the signal handlers
            yield

    opts = uvicorn_options(host=host, port=port)
    opts.pop("workers")
    opts.update(tls or {})
    main = _Server(uvicorn.Config(protect(platform.gateway, api_keys=api_keys), **opts))
    admin_opts = uvicorn_options(host=admin_host, port=admin_port)
    admin_opts.pop("workers")
    admin_opts["lifespan"] = "off"
    admin = _Server(uvicorn.Config(platform.admin, **admin_opts))
    listener = None
    if grpc_port is not None:  # the same gateway app over gRPC, on this loop (ferryman_runtimes.grpc)
        from ferryman_runtimes.grpc.server import start_grpc

        listener = await start_grpc(
            platform.gateway,
            host=host,
            port=grpc_port,
            api_keys=api_keys,
            tls_cert=(tls or {}).get("ssl_certfile"),
            tls_key=(tls or {}).get("ssl_keyfile"),
        )
    info = {
        "url": f"http://{admin_host}:{admin_port}",
        "model": platform.md.name,
        "gateway": f"{'https' if tls else 'http'}://{host}:{port}",
        "pid": os.getpid(),
    }
    if listener is not None:
        info["grpc"] = f"{host}:{listener.port}"
    write_json(state_dir / ADMIN_FILE, info)
    driver = asyncio.create_task(platform.controller.run())
    background = [asyncio.create_task(t) for t in platform.extras.get("tasks", [])]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: _stop(main, admin))
    try:
        await asyncio.gather(main.serve(), admin.serve())
    finally:
        if listener is not None:
            await listener.stop()
        for t in (driver, *background):
            t.cancel()
        for t in (driver, *background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        platform.controller.persist()
        for close in platform.extras.get("closers", []):
            close()


def _stop(*servers: Any) -> None:
    for s in servers:
        s.should_exit = True


def run(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    admin_host: str = "127.0.0.1",
    admin_port: int | None = None,
    state_dir: str = ".ferryman",
    api_keys: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    telemetry: bool = True,
    grpc_port: int | None = None,
) -> None:
    state = Path(state_dir)
    tls = tls_options(cert=tls_cert, key=tls_key)  # checked before any model loads: fail fast
    if api_keys is not None:
        ApiKeys(api_keys)
    platform = build_platform(Path(spec), state_dir=state, progress=True, telemetry=telemetry)
    log.info(
        "ferryman up: %s on %s://%s:%d (admin http://%s:%d)%s%s",
        platform.md.name,
        "https" if tls else "http",
        host,
        port,
        admin_host,
        admin_port or port + 1,
        f", gRPC on {host}:{grpc_port}" if grpc_port else "",
        " with API keys" if api_keys else "",
    )
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            serve(
                platform,
                host=host,
                port=port,
                admin_host=admin_host,
                admin_port=admin_port or port + 1,
                state_dir=state,
                api_keys=api_keys,
                tls=tls,
                grpc_port=grpc_port,
            )
        )
