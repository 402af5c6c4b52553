"""`ferryman serve`: the native ONNX Runtime server for a spec (every version) or a single .onnx file."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ferryman import metrics
from ferryman.dataplane import DataPlane, ModelRepository, repository_for, repository_for_file
from ferryman.engine import OnnxModel
from ferryman.metrics_exposition import cleanup_multiprocess, prepare_multiprocess
from ferryman.metrics_flush import multiprocess_dir
from ferryman.observability import instrument
from ferryman.spec import Limits, ModelDeployment, load_deployment
from ferryman_runtimes.asgi.app import InferenceApp
from ferryman_runtimes.asgi.direct import PROTOCOL
from ferryman_runtimes.asgi.security import ApiKeys, protect
from ferryman_runtimes.asgi.tls import tls_options
from ferryman_runtimes.native.batcher import BatchObserver, VersionBatcher, batchers_for

log = logging.getLogger("ferryman.serve")

ENV_TARGET = "FERRYMAN_SERVE_TARGET"
ENV_MAX_BODY = "FERRYMAN_MAX_BODY_BYTES"
ENV_API_KEYS = "FERRYMAN_API_KEYS"
ENV_GRPC = "FERRYMAN_GRPC_"  # multi-worker mode: PORT, HOST, TLS_CERT, TLS_KEY of the gRPC listener


def build_app(
    target: str | Path, *, max_body_bytes: int | None = None, progress: bool = False, telemetry: bool = True
) -> InferenceApp:
    """Load everything first: the server never starts half-ready (a load error raises here).

    ``telemetry`` adds the Prometheus observer, ``GET /metrics`` and (for a spec with reference data)
    drift monitoring with ``GET /drift``; the multi-worker parent validates with it off.
    """
    path = Path(target)
    md = None
    if path.suffix == ".onnx":
        repo = repository_for_file(path)
        limits = Limits()
    else:
        md = load_deployment(path)
        repo = repository_for(md, progress=progress)
        limits = md.spec.limits.model_copy()
    if max_body_bytes is not None:
        limits.max_body_bytes = max_body_bytes
    if not telemetry:
        return InferenceApp(DataPlane(repo, limits=limits))
    inst = instrument(md, repo)
    if md is not None:
        inst.metrics.set_traffic_weights(
            md.name, {v: 100 if v == repo.default_version[md.name] else 0 for v in repo.models[md.name]}
        )
    app = NativeApp(DataPlane(repo, limits=limits), observer=inst.observer, extra_routes=inst.routes)
    if md is not None:
        app.batchers = spec_batchers(md, repo, inst.metrics)
        app.closers.extend(b.close for b in app.batchers.values())
    app.closers.append(inst.close)
    return app


def spec_batchers(
    md: ModelDeployment, repo: ModelRepository, m: metrics.FerrymanMetrics
) -> dict[tuple[str, str], VersionBatcher]:
    """A batcher for every version whose batching is on (its own or ``spec.batching``), reporting each run's
    size and its requests' queue delays to ``m``. The gateway (``ferryman up``) uses it too."""
    models = [repo.get(md.name, v.name) for v in md.spec.versions]
    return batchers_for(
        models,
        lambda model: md.spec.batching_for(model.version),
        observe=lambda model: batch_metrics(m, model),
    )


def batch_metrics(m: metrics.FerrymanMetrics, model: OnnxModel) -> BatchObserver:
    size = m.batch_size.labels(model.name, model.version)
    delay = m.batch_queue_delay.labels(model.name, model.version)

    def observe(requests: int, rows: int, delays: Sequence[float]) -> None:
        size.observe(requests)
        for d in delays:
            delay.observe(d)

    return observe


class NativeApp(InferenceApp):
    """The inference app plus start-up and shutdown hooks (uvicorn re-raises SIGTERM after shutdown: no
    atexit). ``on_startup`` / ``on_shutdown``: coroutines run on the server's loop (the gRPC listener)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closers: list[Callable[[], None]] = []
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def startup(self) -> None:
        await super().startup()
        for start in self.on_startup:  # a failure (the gRPC port is taken) fails the start-up: no half server
            await start()

    async def shutdown(self) -> None:
        for stop in self.on_shutdown:
            try:
                await stop()
            except Exception:
                log.exception("shutdown hook failed")
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("shutdown hook failed")


def with_grpc(
    app: InferenceApp,
    *,
    host: str,
    port: int,
    api_keys: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve ``app`` over gRPC too (``ferryman_runtimes.grpc``), started and stopped with it on its loop."""
    if not isinstance(app, NativeApp):
        raise TypeError("gRPC needs the native app's start-up hooks")
    from ferryman_runtimes.grpc.server import GrpcListener, start_grpc

    listeners: list[GrpcListener] = []

    async def start() -> None:
        listeners.append(
            await start_grpc(
                app,
                host=host,
                port=port,
                api_keys=api_keys,
                tls_cert=tls_cert,
                tls_key=tls_key,
                reuse_port=reuse_port,
            )
        )

    async def stop() -> None:
        while listeners:
            await listeners.pop().stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def app_from_env() -> Any:
    """uvicorn factory for multi-worker mode: each worker process loads its own sessions."""
    body = os.environ.get(ENV_MAX_BODY)
    app = build_app(os.environ[ENV_TARGET], max_body_bytes=int(body) if body else None)
    api_keys = os.environ.get(ENV_API_KEYS) or None
    grpc_port = os.environ.get(ENV_GRPC + "PORT")
    if grpc_port:  # every worker listens on the port (SO_REUSEPORT): the kernel spreads the connections
        with_grpc(
            app,
            host=os.environ[ENV_GRPC + "HOST"],
            port=int(grpc_port),
            api_keys=api_keys,
            tls_cert=os.environ.get(ENV_GRPC + "TLS_CERT"),
            tls_key=os.environ.get(ENV_GRPC + "TLS_KEY"),
            reuse_port=True,
        )
    return protect(app, api_keys=api_keys)


def uvicorn_options(*, host: str, port: int, workers: int = 1) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        # httptools + limits + one write per response; predictions answered without an ASGI task
        "http": PROTOCOL,
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }


def run(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    max_body_bytes: int | None = None,
    api_keys: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    grpc_port: int | None = None,
) -> None:
    import uvicorn

    opts = uvicorn_options(host=host, port=port, workers=workers)
    opts.update(tls_options(cert=tls_cert, key=tls_key))
    if api_keys is not None:
        api_keys = str(Path(api_keys).resolve())
        ApiKeys(api_keys)  # fail fast, with a clear error, on a missing key source
    if workers > 1:
        # Validate in this process first so a broken model fails fast with a clear error.
        build_app(target, max_body_bytes=max_body_bytes, progress=True, telemetry=False)
        os.environ[ENV_TARGET] = str(target)
        if max_body_bytes is not None:
            os.environ[ENV_MAX_BODY] = str(max_body_bytes)
        if api_keys is not None:
            os.environ[ENV_API_KEYS] = api_keys
        if grpc_port is not None:
            os.environ.update({ENV_GRPC + "PORT": str(grpc_port), ENV_GRPC + "HOST": host})
            if tls_cert and tls_key:
                os.environ.update(
                    {
                        ENV_GRPC + "TLS_CERT": str(Path(tls_cert).resolve()),
                        ENV_GRPC + "TLS_KEY": str(Path(tls_key).resolve()),
                    }
                )
        # Workers share one metrics directory so any of them answers /metrics for all.
        owned = multiprocess_dir() is None
        directory = prepare_multiprocess()
        try:
            uvicorn.run("ferryman_runtimes.native.server:app_from_env", factory=True, **opts)
        finally:
            if owned:
                cleanup_multiprocess(directory)
    else:
        app = build_app(target, max_body_bytes=max_body_bytes, progress=True)
        if grpc_port is not None:
            with_grpc(app, host=host, port=grpc_port, api_keys=api_keys, tls_cert=tls_cert, tls_key=tls_key)
        uvicorn.run(protect(app, api_keys=api_keys), **opts)
