"""Feeds the drift monitor from the data plane (a RequestObserver) and serves ``GET /drift``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ferryman.drift.monitor import DriftMonitor
from ferryman.protocol.tensor import InferRequest, InferResponse
from ferryman.telemetry import Finished, RequestObserver, RequestRecord


class DriftObserver(RequestObserver):
    """Copies the inputs (and predictions) of successful requests into the monitor's windows."""

    def __init__(self, monitor: DriftMonitor, *, include_shadow: bool = True) -> None:
        self.monitor = monitor
        self.include_shadow = include_shadow

    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        self.finished_many(((record, request, response),))

    def finished_many(self, batch: Sequence[Finished]) -> None:
        model, shadow, observe = self.monitor.model, self.include_shadow, self.monitor.observe_request
        for record, request, response in batch:
            if (
                record.code == 200
                and request is not None
                and record.model == model
                and (shadow or record.route != "shadow")
            ):
                observe(record.version, request, response)


def drift_routes(*monitors: DriftMonitor) -> dict[tuple[str, str], Any]:
    """``GET /drift``: every monitored version's latest report as JSON. The ``x-ferryman-drift-engine``
    header says ``ready`` once every monitor's engine is loaded, ``warming`` before (benchmarks wait for
    it)."""

    async def handler(request: Any, receive: Any, send: Any) -> None:
        body = orjson.dumps({m.model: {v: r.to_dict() for v, r in m.reports().items()} for m in monitors})
        engine = b"ready" if all(m.engine_ready() for m in monitors) else b"warming"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-ferryman-drift-engine", engine),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return {("GET", "/drift"): handler}
