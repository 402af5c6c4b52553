"""The gateway: the routing policy applied in front of in-process ONNX Runtime sessions.

Each request is routed by :func:`ferryman.routing.decide` against the current :class:`RouteTable`;
a new table (a rollout step, a switch, a rollback) is swapped in with one reference assignment, so a
request sees either the old split or the new one, never a mix, and no request fails during a switch.
Shadow copies run after the caller has its response, on a worker thread beside the event loop (ONNX
Runtime releases the GIL, so a slow candidate never stalls other callers), at most
``SHADOW_MAX_IN_FLIGHT`` at a time (beyond that copies are dropped and counted, never queued without
bound); their failures are recorded but never reach the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ferryman.dataplane import DataPlane
from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError
from ferryman.protocol.tensor import InferRequest, InferResponse
from ferryman.routing import ROUTE_SHADOW, RouteTable, RoutingInputs, decide
from ferryman.spec import StickySource
from ferryman.telemetry import RequestObserver, RequestRecord
from ferryman_runtimes.asgi.app import InferenceApp, Selection
from ferryman_runtimes.asgi.http import Request
from ferryman_runtimes.gateway.predictions import PredictionLog

log = logging.getLogger("ferryman.gateway")

PREDICTIONS_KEPT = 100_000  # request id -> (version, route, class output) for A/B feedback
SHADOW_MAX_IN_FLIGHT = 64
_NOTHING = RoutingInputs()


class GatewayApp(InferenceApp):
    openapi_kind = "gateway"

    def __init__(
        self,
        dataplane: DataPlane,
        table: RouteTable,
        *,
        observer: RequestObserver | None = None,
        extra_routes: dict[tuple[str, str], Any] | None = None,
        track_predictions: bool = True,
    ) -> None:
        super().__init__(dataplane, observer=observer, extra_routes=extra_routes)
        self.table = table
        self._headers = _wanted_headers(table)
        self._random = random.random
        self.track_predictions = track_predictions
        # request id -> (version, route, the class output array or None); the class is read on feedback only
        self.predictions = PredictionLog(PREDICTIONS_KEPT)
        self.shadow_tasks: set[asyncio.Task[None]] = set()
        self.shadow_errors = 0
        self.shadow_requests = 0
        self.shadow_dropped = 0
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferryman-shadow")

    def set_table(self, table: RouteTable) -> None:
        self._headers = _wanted_headers(table)
        self.table = (
            table  # atomic: one reference assignment (a request reading the old headers set is harmless)
        )

    def prediction(self, request_id: str) -> tuple[str, str, int | None] | None:
        """(version, route, predicted class or None) of a remembered request, for A/B feedback."""
        seen = self.predictions.get(request_id)
        if seen is None:
            return None
        version, route, labels = seen
        return version, route, (int(labels.flat[0]) if labels is not None else None)

    def forget(self, request_id: str) -> None:
        """Drop a remembered request (its feedback was counted)."""
        self.predictions.forget(request_id)

    def openapi_route_headers(self) -> list[str]:
        table = self.table
        headers = [table.pin_header]
        if table.sticky is not None and table.sticky.source == StickySource.header:
            headers.append(table.sticky.name)
        return headers

    # -- routing ------------------------------------------------------------------------------------
    def select(
        self, model_name: str, version: str | None, request: Request, infer: InferRequest
    ) -> Selection:
        table = self.table
        if model_name != table.model:
            return super().select(model_name, version, request, infer)
        headers = _routing_headers(request, self._headers)
        sticky = table.sticky
        if sticky is None and headers is None and version is None:
            inputs = _NOTHING  # a weighted draw: nothing on the request can change the choice
        else:
            inputs = self._routing_inputs(
                request, infer, model_name=model_name, version=version, headers=headers
            )
        decision = decide(
            table, inputs, draw=self._random(), shadow_draw=self._random() if table.shadow else 1.0
        )
        model = self.repository.get(model_name, decision.version)
        shadow = self.repository.get(model_name, decision.shadow) if decision.shadow else None
        selection = Selection(model, decision.route, shadow)
        if infer.id is None and self.track_predictions:
            selection.seq, infer.id = self.predictions.new_id()
        return selection

    def _routing_inputs(
        self,
        request: Request,
        infer: InferRequest,
        *,
        model_name: str,
        version: str | None,
        headers: dict[str, str] | None,
    ) -> RoutingInputs:
        cookies: dict[str, str] = {}
        fields: dict[str, object] = {}
        sticky = self.table.sticky
        if sticky is not None:
            if sticky.source == StickySource.cookie:
                value = request.cookie(sticky.name)
                if value is not None:
                    cookies[sticky.name] = value
            elif sticky.source == StickySource.field:
                fields = _sticky_fields(infer, sticky.name)
                if sticky.name not in self.repository.get(model_name).signature.input_names:
                    # the key travelled as an extra input: strip it before the model sees the request
                    infer.inputs = [t for t in infer.inputs if t.name != sticky.name]
        return RoutingInputs(path_version=version, headers=headers or {}, cookies=cookies, fields=fields)

    def after_response(
        self, selection: Selection, request: Request, infer: InferRequest, response: InferResponse | None
    ) -> None:
        if self.track_predictions and response is not None and infer.id is not None:
            self._remember(infer.id, selection, response)
        if selection.shadow is not None:
            if len(self.shadow_tasks) >= SHADOW_MAX_IN_FLIGHT:
                self.shadow_dropped += 1
                return
            task = asyncio.get_running_loop().create_task(self._shadow(selection, infer))
            self.shadow_tasks.add(task)
            task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(self, selection: Selection, infer: InferRequest) -> None:
        model = selection.shadow
        assert model is not None
        record = RequestRecord(
            model=model.name,
            version=model.version,
            route=ROUTE_SHADOW,
            protocol="shadow",
            code=200,
            seconds=0.0,
        )
        self.shadow_requests += 1
        response = None
        try:
            response = await asyncio.get_running_loop().run_in_executor(
                self._shadow_pool, self._shadow_infer, model, infer, record
            )
        except FerrymanError as err:
            record.code = err.status
            self.shadow_errors += 1
        except Exception:  # a broken candidate must never hurt the caller
            record.code = 500
            self.shadow_errors += 1
            log.exception("shadow inference on %s failed", model.version)
        self.observer.finished(record, infer, response)  # on the loop thread, like every other record

    def _shadow_infer(self, model: OnnxModel, infer: InferRequest, record: RequestRecord) -> InferResponse:
        t0 = time.perf_counter()
        try:
            return self.dataplane.infer(model, infer)
        finally:
            record.seconds = record.compute_seconds = time.perf_counter() - t0

    def _remember(self, request_id: str, selection: Selection, response: InferResponse) -> None:
        self.predictions.record(
            selection.seq, request_id, (selection.model.version, selection.route, _class_output(response))
        )

    async def shutdown(self) -> None:
        if self.shadow_tasks:
            await asyncio.wait(list(self.shadow_tasks), timeout=5)
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)


def _wanted_headers(table: RouteTable) -> dict[bytes, str]:
    """The request headers routing reads (raw lower-case name -> the policy's name): the pin, a sticky key."""
    wanted = {table.pin_header.encode(): table.pin_header}
    if table.sticky is not None and table.sticky.source == StickySource.header:
        name = table.sticky.name.lower()
        wanted[name.encode()] = name
    return wanted


def _routing_headers(request: Request, wanted: dict[bytes, str]) -> dict[str, str] | None:
    """The routing headers present on the request, or None when there are none (the common case)."""
    headers = request.headers
    out = None
    for raw, name in wanted.items():
        value = headers.get(raw)
        if value is not None:
            if out is None:
                out = {}
            out[name] = value.decode("latin-1")
    return out


def _sticky_fields(infer: InferRequest, name: str) -> dict[str, object]:
    for t in infer.inputs:
        if t.name == name and t.data.size:
            value = t.data.flat[0]
            return {
                name: value.decode()
                if isinstance(value, bytes)
                else value.item()
                if hasattr(value, "item")
                else value
            }
    params = infer.parameters.get(name)
    return {name: params} if params is not None else {}


def _class_output(response: InferResponse) -> np.ndarray | None:
    """The one-element integer output (a classifier's label) of a 1-row answer, if any."""
    for t in response.outputs:
        if t.datatype.startswith("INT") and t.data.size == 1:
            return t.data
    return None
