"""Exact per-version and per-route request accounting (counts, errors, every latency) for the analysis.

An observer on the data plane appends each finished request; :meth:`Accounting.window` reads the requests
since a mark (the start of the current rollout step) without disturbing the running totals. Latencies are
kept exactly (float64 per request) in bounded segments; p99 is computed from the real values, not buckets,
with the nearest-rank definition: the smallest latency that at least 99 % of the requests did not exceed.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ferryman.analysis import VersionStats
from ferryman.protocol.tensor import InferRequest, InferResponse
from ferryman.telemetry import Finished, RequestObserver, RequestRecord, Settle

QUANTILE_METHOD: Final = "inverted_cdf"  # nearest rank: an observed value, never interpolated
MAX_SAMPLES = (
    2_000_000  # per (version, route); beyond this the oldest half is dropped (exact within the tail)
)


@dataclass
class _Series:
    count: int = 0
    errors: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    times: array = field(default_factory=lambda: array("d"))
    failed: array = field(default_factory=lambda: array("b"))  # 1 where the request was a 5xx
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class RouteTotals:
    version: str
    route: str
    requests: int
    errors: int
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None


class Accounting(RequestObserver):
    """Thread-safe; ``finished`` is on the hot path and only appends. Behind a deferred observer built with
    the same ``settle`` hook (see ``ferryman.telemetry``) a request is stamped when its loop turn ends, and
    the readers settle first."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, settle: Settle | None = None) -> None:
        self._now = clock  # monotonic seconds; windows are marked in this clock
        self.settle = settle if settle is not None else Settle()
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}

    # RequestObserver -----------------------------------------------------------------------------
    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        self.finished_many(((record, request, response),))

    def finished_many(self, batch: Sequence[Finished]) -> None:
        """Append each request (one lock for the batch; they share one timestamp: they finished together)."""
        now = self._now()
        series = self._series
        with self._lock:
            for record, _, _ in batch:
                code = record.code
                if not record.version or (400 <= code < 500):
                    continue  # client mistakes before or after routing are the caller's, not the version's
                key = (record.version, record.route)
                s = series.get(key)
                if s is None:
                    s = series[key] = _Series()
                s.count += 1
                failed = code >= 500
                s.errors += failed
                s.latencies.append(record.seconds)
                s.times.append(now)
                s.failed.append(failed)
                if len(s.latencies) > MAX_SAMPLES:
                    half = len(s.latencies) // 2
                    del s.latencies[:half]
                    del s.times[:half]
                    del s.failed[:half]
                    s.dropped += half

    # reading -------------------------------------------------------------------------------------
    def now(self) -> float:
        return self._now()

    def window(self, version: str, *, since: float, routes: set[str] | None = None) -> VersionStats:
        """Stats for ``version`` over requests finished at or after ``since`` (monotonic seconds)."""
        self.settle()
        lat_parts = []
        errors = 0
        with self._lock:
            for (v, route), s in self._series.items():
                if v != version or (routes is not None and route not in routes):
                    continue
                start = _first_at_or_after(s.times, since)
                lat_parts.append(np.array(s.latencies[start:], dtype=np.float64))
                errors += sum(s.failed[start:])
        lat = np.concatenate(lat_parts) if lat_parts else np.empty(0)
        if lat.size == 0:
            return VersionStats(version=version, requests=0, errors=0, p99_seconds=None)
        p50, p95, p99 = np.quantile(lat, [0.5, 0.95, 0.99], method=QUANTILE_METHOD)
        return VersionStats(
            version=version,
            requests=int(lat.size),
            errors=errors,
            p99_seconds=float(p99),
            p50_seconds=float(p50),
            p95_seconds=float(p95),
        )

    def totals(self) -> list[RouteTotals]:
        self.settle()
        out = []
        with self._lock:
            items = [
                (k, s.count, s.errors, np.array(s.latencies, dtype=np.float64))
                for k, s in self._series.items()
            ]
        for (version, route), count, errors, lat in sorted(items):
            q = (
                np.quantile(lat, [0.5, 0.95, 0.99], method=QUANTILE_METHOD)
                if lat.size
                else [None, None, None]
            )
            out.append(
                RouteTotals(version, route, count, errors, *(None if x is None else float(x) for x in q))
            )
        return out


def _first_at_or_after(times: array, since: float) -> int:
    """Index of the first time >= ``since``. The zero-copy view is released before returning: while a view
    exists, ``array.append`` raises BufferError, so a view outliving the lock would break a concurrent
    writer."""
    if not times:
        return 0
    view = np.frombuffer(times, dtype=np.float64)
    try:
        return int(np.searchsorted(view, since, side="left"))
    finally:
        del view
