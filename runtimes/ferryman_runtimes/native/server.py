"""`ferryman serve`: the native ONNX Runtime server for a spec (every version) or a single .onnx file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ferryman.dataplane import DataPlane, repository_for, repository_for_file
from ferryman.spec import Limits, load_deployment

from ferryman_runtimes.asgi.app import InferenceApp

log = logging.getLogger("ferryman.serve")

ENV_TARGET = "FERRYMAN_SERVE_TARGET"
ENV_MAX_BODY = "FERRYMAN_MAX_BODY_BYTES"


def build_app(target: str | Path, *, max_body_bytes: int | None = None, progress: bool = False) -> InferenceApp:
    """Load everything first: the server never starts half-ready (a load error raises here)."""
    path = Path(target)
    if path.suffix == ".onnx":
        repo = repository_for_file(path)
        limits = Limits()
    else:
        md = load_deployment(path)
        repo = repository_for(md, progress=progress)
        limits = md.spec.limits.model_copy()
    if max_body_bytes is not None:
        limits.max_body_bytes = max_body_bytes
    return InferenceApp(DataPlane(repo, limits=limits))


def app_from_env() -> InferenceApp:
    """uvicorn factory for multi-worker mode: each worker process loads its own sessions."""
    body = os.environ.get(ENV_MAX_BODY)
    return build_app(os.environ[ENV_TARGET], max_body_bytes=int(body) if body else None)


def uvicorn_options(*, host: str, port: int, workers: int = 1) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }


def run(target: str, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
        max_body_bytes: int | None = None) -> None:
    import uvicorn

    opts = uvicorn_options(host=host, port=port, workers=workers)
    if workers > 1:
        # Validate in this process first so a broken model fails fast with a clear error.
        build_app(target, max_body_bytes=max_body_bytes, progress=True)
        os.environ[ENV_TARGET] = str(target)
        if max_body_bytes is not None:
            os.environ[ENV_MAX_BODY] = str(max_body_bytes)
        uvicorn.run("ferryman_runtimes.native.server:app_from_env", factory=True, **opts)
    else:
        app = build_app(target, max_body_bytes=max_body_bytes, progress=True)
        uvicorn.run(app, **opts)
