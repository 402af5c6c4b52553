"""The protocol-agnostic data plane: a repository of loaded model versions and the infer call.

REST adapters (v1, v2 JSON/binary), the gateway, the Ray Serve app and the KServe-contract server all
decode into :class:`InferRequest`, call :meth:`DataPlane.infer`, and encode the :class:`InferResponse`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferryman import __version__
from ferryman.batching import session_threads
from ferryman.engine import OnnxModel
from ferryman.errors import InvalidInput, ModelNotFound, ModelStoreError, VersionNotFound
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.signature import validate_inputs
from ferryman.spec import Limits, ModelDeployment
from ferryman.store import fetch, redact


@dataclass
class ModelRepository:
    """Loaded versions by model name. ``default_version`` answers requests that name no version."""

    models: dict[str, dict[str, OnnxModel]] = field(default_factory=dict)
    default_version: dict[str, str] = field(default_factory=dict)
    ready: bool = False

    def add(self, model: OnnxModel, *, default: bool = False) -> None:
        self.models.setdefault(model.name, {})[model.version] = model
        if default or model.name not in self.default_version:
            self.default_version[model.name] = model.version

    def get(self, name: str, version: str | None = None) -> OnnxModel:
        versions = self.models.get(name)
        if versions is None:
            raise ModelNotFound(f"model {name!r} not found (serving: {sorted(self.models)})")
        v = version or self.default_version[name]
        try:
            return versions[v]
        except KeyError as err:
            raise VersionNotFound(
                f"model {name!r} has no version {v!r} (versions: {sorted(versions)})"
            ) from err

    def names(self) -> list[str]:
        return sorted(self.models)


class DataPlane:
    def __init__(self, repository: ModelRepository, *, limits: Limits | None = None) -> None:
        self.repository = repository
        self.limits = limits or Limits()

    def infer(self, model: OnnxModel, request: InferRequest) -> InferResponse:
        feed, names = self.prepare(model, request)
        return self.respond(model, request, names, model.execute(feed, names))

    def prepare(self, model: OnnxModel, request: InferRequest) -> tuple[dict[str, np.ndarray], list[str]]:
        """The validated feed and the output names asked for (raises the request's InvalidInput); a batcher
        runs several requests' feeds as one and gives each its arrays for :meth:`respond`."""
        feed = validate_inputs(model.signature, request.inputs, max_rows=self.limits.max_batch_rows)
        names = model.output_names
        if request.outputs:
            names = [o.name for o in request.outputs]
            unknown = [n for n in names if n not in model.output_names]
            if unknown:
                raise InvalidInput(
                    f"outputs: unknown output(s) {unknown}; model outputs are {model.output_names}"
                )
        return feed, names

    @staticmethod
    def respond(
        model: OnnxModel, request: InferRequest, names: list[str], arrays: list[np.ndarray]
    ) -> InferResponse:
        types = model.output_types
        outputs = [Tensor(n, types[n], list(a.shape), a) for n, a in zip(names, arrays, strict=True)]
        return InferResponse(model.name, model.version, outputs, request.id)

    # -- metadata -----------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferryman", "version": __version__, "extensions": ["binary_tensor_data"]}

    def model_metadata(self, model: OnnxModel) -> dict[str, Any]:
        versions = sorted(self.repository.models[model.name])
        return {
            "name": model.name,
            "versions": versions,
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_v2() for t in model.signature.inputs],
            "outputs": [t.to_v2() for t in model.signature.outputs],
            "parameters": {"version": model.version, "opset": model.opset},
        }


def load_versions(
    md: ModelDeployment,
    *,
    versions: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> list[OnnxModel]:
    """Fetch, verify and load every requested version; all or nothing (raises on the first failure)."""
    wanted = set(versions) if versions is not None else None
    loaded = []
    for v in md.spec.versions:
        if wanted is not None and v.name not in wanted:
            continue
        try:
            path = fetch(v.uri, sha256=v.sha256, cache_dir=cache_dir, progress=progress)
            threads = session_threads(md.spec.threads, md.spec.batching_for(v.name))
            loaded.append(OnnxModel.load(path, name=md.name, version=v.name, threads=threads))
        except ModelStoreError as err:
            raise ModelStoreError(f"version {v.name!r} ({redact(v.uri)}): {err}") from err
    return loaded


def repository_for(
    md: ModelDeployment, *, cache_dir: Path | None = None, progress: bool = False
) -> ModelRepository:
    repo = ModelRepository()
    for model in load_versions(md, cache_dir=cache_dir, progress=progress):
        repo.add(model, default=model.version == md.spec.traffic.stable)
    repo.ready = True
    return repo


def repository_for_file(
    path: Path, *, name: str | None = None, version: str = "1", threads: int = 1
) -> ModelRepository:
    repo = ModelRepository()
    repo.add(OnnxModel.load(path, name=name or path.stem, version=version, threads=threads))
    repo.ready = True
    return repo
