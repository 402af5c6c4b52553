"""ferryman's native server behind KServe's serving-runtime contract (no KServe import on this path).

KServe starts the runtime container with ``--model_name``, ``--model_dir`` (where the storage initializer
put the model: ``/mnt/models``) and ``--http_port`` (8080), and probes the v2 health endpoints. The model
file is found in the directory (``model.onnx``, else the only ``*.onnx``, at the top or one level down as
in ``1/model.onnx``), loaded before the port opens, and served by the raw ASGI
:class:`~ferryman_runtimes.asgi.app.InferenceApp`: KServe v1 and Open Inference Protocol v2 (JSON and
binary), ``GET /v1/models/{m}`` readiness, ``GET /`` liveness like KServe's own server, ``/metrics``.
``--batching`` (or ``$FERRYMAN_BATCHING``: the version's ``spec.batching`` as JSON) turns on the same
adaptive batching as ``ferryman serve`` (docs/batching.md): the runtime batches itself, no batcher sidecar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ferryman import metrics
from ferryman.batching import session_threads
from ferryman.dataplane import DataPlane, ModelRepository
from ferryman.engine import OnnxModel
from ferryman.errors import ModelStoreError, SpecError
from ferryman.metrics_exposition import prepare_multiprocess
from ferryman.metrics_exposition import routes as metrics_routes
from ferryman.request_metrics import PrometheusObserver
from ferryman.spec import Batching, Limits, format_validation_error
from ferryman_runtimes.asgi.app import InferenceApp
from ferryman_runtimes.asgi.http import send_json
from ferryman_runtimes.native.batcher import batchers_for

DEFAULT_MODEL_DIR = "/mnt/models"
DEFAULT_HTTP_PORT = 8080
MODEL_FILE = "model.onnx"
ENV_PREFIX = "FERRYMAN_KSERVE_"  # how multi-worker mode hands the options to each worker process


@dataclass(frozen=True)
class Options:
    model_name: str
    model_dir: str = DEFAULT_MODEL_DIR
    model_version: str = "1"
    http_port: int = DEFAULT_HTTP_PORT
    host: str = "0.0.0.0"
    workers: int = 1
    threads: int = 1
    max_body_bytes: int | None = None
    batching: str | None = None  # the version's spec.batching as JSON (camelCase); None: no batching
    grpc_port: int | None = None  # the v2 gRPC service (KServe's convention: 8081); None: REST only

    def to_env(self) -> dict[str, str]:
        return {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Options:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            return e.get(f"{ENV_PREFIX}{name.upper()}")

        body = get("max_body_bytes")
        return cls(
            model_name=str(get("model_name")),
            model_dir=get("model_dir") or DEFAULT_MODEL_DIR,
            model_version=get("model_version") or "1",
            threads=int(get("threads") or 1),
            host=get("host") or "0.0.0.0",
            workers=int(get("workers") or 1),
            max_body_bytes=int(body) if body else None,
            batching=get("batching") or None,
            grpc_port=int(get("grpc_port") or 0) or None,
        )


def parse_batching(text: str | None) -> Batching | None:
    """``--batching`` / ``$FERRYMAN_BATCHING``: a ``spec.batching`` object as JSON; empty or absent: None."""
    if not text:
        return None
    try:
        return Batching.model_validate_json(text)
    except ValidationError as err:
        raise SpecError(f"--batching: invalid batching settings\n{format_validation_error(err)}") from err


def find_model_file(model_dir: str | Path) -> Path:
    """The ONNX file the storage initializer placed in ``model_dir`` (or ``model_dir`` itself if a file)."""
    root = Path(model_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        raise ModelStoreError(
            f"model directory {root} does not exist (is the storage initializer configured?)"
        )
    for candidates in (
        [root / MODEL_FILE] if (root / MODEL_FILE).is_file() else [],
        sorted(root.glob("*.onnx")),
        sorted(p for p in root.glob("*/" + MODEL_FILE)),
        sorted(root.glob("*/*.onnx")),
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in candidates)
            raise ModelStoreError(f"{root}: several ONNX files ({names}); keep one, or name it {MODEL_FILE}")
    listing = ", ".join(sorted(p.name for p in root.iterdir())[:20]) or "empty"
    raise ModelStoreError(f"{root}: no .onnx model file found (contents: {listing})")


async def _alive(request: Any, receive: Any, send: Any) -> None:
    await send_json(send, 200, {"status": "alive"})


def build_app(options: Options) -> InferenceApp:
    """Load the model (a load error raises here, before the port opens) and build the ASGI app."""
    path = find_model_file(options.model_dir)
    batching = parse_batching(options.batching)
    model = OnnxModel.load(
        path,
        name=options.model_name,
        version=options.model_version,
        threads=session_threads(options.threads, batching),
    )
    repo = ModelRepository()
    repo.add(model, default=True)
    repo.ready = True
    limits = Limits()
    if options.max_body_bytes is not None:
        limits.max_body_bytes = options.max_body_bytes
    metrics.set_model_ready(model.name, model.version, True)
    routes = {**metrics_routes(), ("GET", "/"): _alive}
    from ferryman_runtimes.native.server import NativeApp, with_grpc

    app = NativeApp(DataPlane(repo, limits=limits), observer=PrometheusObserver(), extra_routes=routes)
    if (
        options.grpc_port is not None
    ):  # started with the app on its loop; workers share the port (SO_REUSEPORT)
        with_grpc(app, host=options.host, port=options.grpc_port, reuse_port=options.workers > 1)
    if batching is not None:
        from ferryman_runtimes.native.server import batch_metrics

        app.batchers = batchers_for(
            [model], lambda _: batching, observe=lambda m: batch_metrics(metrics.default(), m)
        )
    return app


def app_from_env() -> InferenceApp:
    """uvicorn factory for ``--workers N``: each worker process loads its own session."""
    return build_app(Options.from_env())


def run(options: Options) -> None:
    import uvicorn

    from ferryman_runtimes.native.server import uvicorn_options

    opts = uvicorn_options(host=options.host, port=options.http_port, workers=options.workers)
    if options.workers > 1:
        prepare_multiprocess()  # one /metrics for all workers (before any metric exists)
        build_app(options)  # fail fast, in this process, on a missing or broken model
        os.environ.update(options.to_env())
        uvicorn.run("ferryman_runtimes.kserve.server:app_from_env", factory=True, **opts)
    else:
        uvicorn.run(build_app(options), **opts)
