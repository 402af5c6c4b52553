"""``kserve`` in the ``ferryman.runtimes`` entry points: the KServe-contract server for a ModelDeployment
spec.

On KServe, each version of a ModelDeployment is an InferenceService: the storage initializer downloads its
``storageUri`` into ``/mnt/models``, then the ``ferryman-onnx`` container runs ``python -m
ferryman_runtimes.kserve --model_name={{.Name}} --model_dir=/mnt/models --http_port=8080`` with the
predictor's ``--model_name=<deployment> --model_version=<version>`` appended. Locally, :func:`run` plays
both parts for one version of a spec (the stable one unless told otherwise):

1. **storage initializer** — :func:`model_directory` fetches the version's URI with ferryman's model store
   (path, ``file://``, ``http(s)://``, ``s3://``; sha256 checked, remote files cached) and lays it out as
   the initializer does for a single-file ``storageUri``: a directory holding only that file, under its own
   name (a link to the fetched file, not a copy).
2. **runtime container** — :func:`container_args` is the argument list the container ends up with, parsed
   by the same parser as ``python -m ferryman_runtimes.kserve``, and :func:`run` serves it with the same
   server (:func:`ferryman_runtimes.kserve.server.run`).

Routing between versions is not this runtime's job (on Kubernetes the operator's gateway does it); start
one launcher per version to serve several.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path

from ferryman.errors import FerrymanError
from ferryman.spec import ModelDeployment, load_deployment
from ferryman.store import fetch
from ferryman.store.base import default_cache_dir
from ferryman_runtimes.kserve.server import MODEL_FILE, Options

MODEL_ROOT_ENV = "FERRYMAN_KSERVE_MODEL_ROOT"  # where the per-version model directories are laid out


def default_model_root() -> Path:
    """``$FERRYMAN_KSERVE_MODEL_ROOT``, else ``kserve/`` beside the model cache (``~/.cache/ferryman``)."""
    root = os.environ.get(MODEL_ROOT_ENV)
    return Path(root) if root else default_cache_dir().parent / "kserve"


def served_version(md: ModelDeployment, version: str | None = None) -> str:
    """The version to serve: the one asked for, else the spec's stable version."""
    if version is None:
        return md.spec.traffic.stable or md.spec.versions[0].name
    try:
        return md.spec.version(version).name
    except KeyError as err:
        known = ", ".join(v.name for v in md.spec.versions)
        raise FerrymanError(f"{md.name}: no version {version!r} in the spec (known: {known})") from err


def _file_name(uri: str) -> str:
    """The name the storage initializer gives a single-file ``storageUri`` (its base name)."""
    name = os.path.basename(uri.split("?", 1)[0].rstrip("/"))
    return name if name.endswith(".onnx") else MODEL_FILE


def model_directory(
    md: ModelDeployment, version: str, *, root: Path | None = None, progress: bool = False
) -> Path:
    """Fetch ``version``'s model and lay it out like KServe's storage initializer; returns the directory.

    The directory (``<root>/<deployment>/<version>``) ends up holding exactly one entry, the model file under
    the URI's base name, so the runtime's model discovery sees what it sees in ``/mnt/models``.
    """
    v = md.spec.version(version)
    path = fetch(v.uri, sha256=v.sha256, progress=progress).resolve()
    directory = (root or default_model_root()) / md.name / v.name
    name = _file_name(v.uri)
    link = directory / f".{name}.{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():  # a previous layout of another URI (not another start's temp link)
            if stale.name != name and not stale.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        link.symlink_to(path)
        link.replace(directory / name)  # atomic: a concurrent start never sees a missing model
    except OSError as err:
        link.unlink(missing_ok=True)
        raise FerrymanError(f"cannot lay out the model directory {directory}: {err}") from err
    return directory


def container_args(
    md: ModelDeployment, version: str, *, model_dir: Path, host: str, port: int, workers: int = 1
) -> list[str]:
    """The runtime container's arguments: the ClusterServingRuntime's, then the InferenceService's
    (``--model_name`` / ``--model_version``, as the operator writes them), then the spec's threads and
    body limit and the version's batching, with the model directory and port of this machine."""
    args = [
        f"--model_dir={model_dir}",
        f"--http_port={port}",
        f"--host={host}",
        f"--model_name={md.name}",
        f"--model_version={version}",
        f"--threads={md.spec.threads}",
        f"--workers={workers}",
        f"--max_body_bytes={md.spec.limits.max_body_bytes}",
    ]
    batching = md.spec.batching_for(version)
    if batching is not None:
        args.append(f"--batching={batching.model_dump_json(by_alias=True, exclude_none=True)}")
    return args


def prepare(
    spec: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    version: str | None = None,
    workers: int = 1,
    model_root: Path | None = None,
) -> Options:
    """Load the spec, lay out the version's model directory and return the server's options."""
    from ferryman_runtimes.kserve.__main__ import parse

    md = load_deployment(spec)
    name = served_version(md, version)
    directory = model_directory(md, name, root=model_root, progress=True)
    return parse(container_args(md, name, model_dir=directory, host=host, port=port, workers=workers))


def run(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    version: str | None = None,
    workers: int = 1,
    model_root: str | None = None,
    admin_host: str | None = None,
    admin_port: int | None = None,
    state_dir: str | None = None,
    telemetry: bool = True,
    api_keys: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve one version of ``spec`` (default: the stable one) on the KServe contract until SIGINT/SIGTERM.

    Takes the keyword arguments ``ferryman up`` passes every runtime. There is no rollout here (one
    InferenceService serves one version; the operator's gateway routes), so the admin API and state
    directory are not used; the server always records ferryman's metrics (``telemetry`` is accepted for
    symmetry). API keys and TLS belong in front of an InferenceService (KServe's ingress), so they are
    refused rather than ignored.
    """
    if api_keys or tls_cert or tls_key:
        raise FerrymanError(
            "--api-keys and --tls-cert/--tls-key are not supported by the kserve runtime "
            "(terminate TLS and authenticate in front of it, as KServe's ingress does)"
        )
    from ferryman_runtimes.kserve.server import run as serve

    options = prepare(
        spec,
        host=host,
        port=port,
        version=version,
        workers=workers,
        model_root=Path(model_root) if model_root else None,
    )
    print(
        f"ferryman {options.model_name} version {options.model_version} on the KServe contract: "
        f"http://{host}:{port} (model directory {options.model_dir})",
        file=sys.stderr,
        flush=True,
    )
    serve(options)
