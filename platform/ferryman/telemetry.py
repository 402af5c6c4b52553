"""The observer interface the data plane reports each request to (metrics, accounting, drift sampling).

Implementations: :class:`NullObserver` (nothing), ``ferryman.metrics.PrometheusObserver`` and the
gateway's exact per-version accounting. ``CompositeObserver`` fans out to several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ferryman.protocol.tensor import InferRequest, InferResponse


@dataclass(slots=True)
class RequestRecord:
    model: str
    version: str  # "" when the request failed before a version was chosen
    route: str  # "stable", "candidate", "pinned", "shadow", an A/B arm, or "direct"
    protocol: str  # "v1", "v2", "v2-binary"
    code: int
    seconds: float
    compute_seconds: float = 0.0
    rows: int = 0


class RequestObserver(Protocol):
    def started(self, model: str) -> None: ...

    def finished(self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None) -> None: ...


class NullObserver:
    ignores_started = True

    def started(self, model: str) -> None:
        return None

    def finished(self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None) -> None:
        return None


class CompositeObserver:
    def __init__(self, *observers: RequestObserver) -> None:
        self.observers = observers
        # observers whose ``started`` does nothing (they say so with ``ignores_started``) are not called
        self._starters = tuple(o for o in observers if not getattr(o, "ignores_started", False))

    def started(self, model: str) -> None:
        for o in self._starters:
            o.started(model)

    def finished(self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None) -> None:
        for o in self.observers:
            o.finished(record, request, response)
