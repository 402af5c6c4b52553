"""The Ray Serve ingress as a raw ASGI app: the gateway's routing policy, v1 + v2, in-process or remote
compute.

:class:`RayIngressApp` is the gateway (:class:`~ferryman_runtimes.gateway.app.GatewayApp`: the same
``routing.decide`` per request, the same atomic table swap) whose compute step can leave the process:
a version listed in ``inline`` runs in this replica's ONNX Runtime session (the common path: cheap models,
no hop), every other version goes through its Ray Serve ``DeploymentHandle`` to the version deployment,
where ``@serve.batch`` stacks concurrent requests into one run. Inputs are validated here either way, so
bad input is a 4xx before anything is shipped. Shadow copies go to the candidate's deployment after the
caller has its answer, never through the ingress's own session.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

import numpy as np

from ferryman.dataplane import DataPlane
from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError, InvalidInput, NotReady
from ferryman.protocol.datatypes import V2_TO_NUMPY
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.routing import ROUTE_SHADOW, RouteTable
from ferryman.signature import validate_inputs
from ferryman.telemetry import RequestObserver, RequestRecord
from ferryman_runtimes.asgi.app import Selection
from ferryman_runtimes.gateway.app import GatewayApp
from ferryman_runtimes.ray.batching import Job

log = logging.getLogger("ferryman.ray")


class RemoteError(FerrymanError):
    """A failure reported by (or while reaching) a version deployment, with the status it maps to."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def one_row_ms(model: OnnxModel, *, runs: int = 15) -> float:
    """Median wall time of a one-row run on a zero input (inf when no such input can be built)."""
    feed: dict[str, np.ndarray] = {}
    for spec in model.signature.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(shape, "", dtype=np.object_)
        else:
            feed[spec.name] = np.zeros(shape, dtype=V2_TO_NUMPY[spec.datatype])
    times = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            model.run(feed)
            times.append((time.perf_counter() - t0) * 1000.0)
    except FerrymanError:
        return float("inf")
    return statistics.median(times)


def choose_inline(models: list[OnnxModel], *, below_ms: float) -> set[str]:
    """Versions cheap enough to compute inside the ingress (a remote hop would cost more than the run)."""
    return {m.version for m in models if below_ms > 0 and one_row_ms(m) < below_ms}


class RayIngressApp(GatewayApp):
    def __init__(
        self,
        dataplane: DataPlane,
        table: RouteTable,
        *,
        remotes: dict[str, Any],
        inline: set[str],
        observer: RequestObserver | None = None,
        extra_routes: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        super().__init__(
            dataplane, table, observer=observer, extra_routes=extra_routes, track_predictions=False
        )
        self.remotes = remotes
        self.inline = set(inline)

    async_compute = True

    def is_remote(self, version: str) -> bool:
        return version not in self.inline and version in self.remotes

    def computes_here(self, model: OnnxModel) -> bool:
        return not self.is_remote(model.version)

    # -- compute ------------------------------------------------------------------------------------
    async def compute(self, model: OnnxModel, infer: InferRequest) -> InferResponse:
        if not self.is_remote(model.version):
            return self.dataplane.infer(model, infer)
        job = _job(self.dataplane, model, infer)
        try:
            async with asyncio.timeout(self.limits.request_timeout_seconds):
                result = await self.remotes[model.version].infer.remote(job)
        except Exception as err:  # the replica died, was unreachable, or timed out
            raise RemoteError(f"version {model.version!r} is unavailable: {type(err).__name__}", 503) from err
        if isinstance(result, FerrymanError):
            raise RemoteError(str(result), result.status) from result
        types = model.output_types
        outputs = [Tensor(n, types[n], list(a.shape), a) for n, a in result.items()]
        return InferResponse(model_name=model.name, model_version=model.version, outputs=outputs, id=infer.id)

    async def _shadow(self, selection: Selection, infer: InferRequest) -> None:
        model = selection.shadow
        if model is None or model.version not in self.remotes:
            return await super()._shadow(selection, infer)
        await asyncio.sleep(0)  # let the caller's response flush first
        record = RequestRecord(
            model=model.name,
            version=model.version,
            route=ROUTE_SHADOW,
            protocol="shadow",
            code=200,
            seconds=0.0,
        )
        self.shadow_requests += 1
        t0 = time.perf_counter()
        response = None
        try:
            job = _job(self.dataplane, model, infer)
            result = await self.remotes[model.version].infer.remote(job)
            if isinstance(result, FerrymanError):
                record.code = result.status
                self.shadow_errors += 1
        except FerrymanError as err:
            record.code = err.status
            self.shadow_errors += 1
        except Exception:  # a broken candidate must never hurt the caller
            record.code = 503
            self.shadow_errors += 1
            log.warning("shadow request to %s failed", model.version, exc_info=True)
        record.seconds = time.perf_counter() - t0
        self.observer.finished(record, infer, response)
        return None

    async def startup(self) -> None:
        if not self.repository.ready:
            raise NotReady("ingress started without its models")


def _job(dataplane: DataPlane, model: OnnxModel, request: InferRequest) -> Job:
    """Validate a request exactly as :meth:`DataPlane.infer` does, without running it."""
    feed = validate_inputs(model.signature, request.inputs)
    max_rows = dataplane.limits.max_batch_rows
    for name, arr in feed.items():
        if arr.ndim and arr.shape[0] > max_rows:
            raise InvalidInput(f"input {name!r}: {arr.shape[0]} rows exceed the limit of {max_rows}")
    names = None
    if request.outputs:
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in model.output_names]
        if unknown:
            raise InvalidInput(
                f"outputs: unknown output(s) {unknown}; model outputs are {model.output_names}"
            )
    return Job(feed, names)
