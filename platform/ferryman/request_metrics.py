"""The request observer: what the data plane reports per request, folded into the Prometheus metrics in bulk.

Request path (:meth:`PrometheusObserver.finished`): one append of a tuple of plain numbers (series id,
seconds, code, rows, compute seconds) and, for a successful answer, appends of references to the output
arrays that feed the prediction distribution; a plain counter of requests in flight moves (the gauge takes
its value at every flush, so a scrape reads it exactly). Nothing kept is tracked by Python's
cyclic garbage collector (a tuple of numbers is untracked at the first collection it survives, numpy arrays
never are), so thousands of pending requests cost the collector nothing. Holding the request and response
objects instead promoted them to the oldest generation and made full collections take tens of milliseconds.

:meth:`PrometheusObserver.flush` folds the pending requests with numpy: a handful of metric updates per
series, whatever the number of requests. Flushes happen on every collection of the metrics' registry (a
scrape, ``get_sample_value``), when ``FLUSH_AT`` requests are pending, every ``FLUSH_INTERVAL_SECONDS`` in
multiprocess mode, and at shutdown (:meth:`FerrymanMetrics.flush`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.ma  # np.unique imports it lazily: 70 ms inside the first fold, on the request path
from prometheus_client import Histogram

from ferryman.metrics import MAX_CLASSES, MAX_SERIES, FerrymanMetrics, default
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.telemetry import RequestRecord

# Pending requests that make the request path fold them in: bounds memory without scrapes, and the pause
# a fold costs the requests waiting behind it (about 1 ms per 1,000 requests).
FLUSH_AT = 1024
_OVERFLOW = ("_overflow_", "", "", "")


def _fast_inc(child: Any) -> Any:
    """The bound increment of a counter/gauge child's value (skips the public wrapper's checks)."""
    return child._value.inc


def _bounds(histogram: Histogram) -> np.ndarray:
    bounds = [float(b) for b in histogram._kwargs["buckets"]]
    if bounds[-1] != float("inf"):
        bounds.append(float("inf"))
    return np.asarray(bounds, dtype=np.float64)


def _take(items: list[Any]) -> list[Any]:
    """Remove and return the current prefix of a list other threads may append to (GIL-atomic steps)."""
    n = len(items)
    taken = items[:n]
    del items[:n]
    return taken


def add_counts(child: Any, counts: np.ndarray, total: float) -> None:
    """Add per-bucket counts (aligned with the child's bounds, +Inf last) and their sum to a histogram child."""
    if len(counts) != len(child._buckets):
        raise RuntimeError("unexpected prometheus_client histogram internals")
    child._sum.inc(float(total))
    for i in np.flatnonzero(counts).tolist():
        child._buckets[i].inc(int(counts[i]))


def observe_many(child: Any, values: np.ndarray) -> None:
    """Observe many values into a histogram child in O(buckets) metric updates (not one per value)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    bounds = np.asarray(child._upper_bounds, dtype=np.float64)
    idx = np.searchsorted(bounds, finite.astype(np.float64), side="left")
    add_counts(child, np.bincount(idx, minlength=len(bounds)), float(finite.sum()))


def _grouped_counts(groups: np.ndarray, values: np.ndarray, bounds: np.ndarray, n_groups: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per group: bucket counts (n_groups, buckets) and value sums, in two bincounts."""
    nb = len(bounds)
    idx = np.searchsorted(bounds, values, side="left")
    counts = np.bincount(groups * nb + idx, minlength=n_groups * nb).reshape(n_groups, nb)
    return counts, np.bincount(groups, weights=values, minlength=n_groups)


class _PredictionPlan:
    """Which response outputs feed the prediction distribution for one (model, version, output names);
    collects references to those output arrays on the request path and folds them with numpy."""

    __slots__ = ("classes", "confidence", "confidence_output", "label_output", "labels", "metrics", "model",
                 "names", "probs", "value", "value_output", "values", "version")

    def __init__(self, metrics: FerrymanMetrics, model: str, version: str, outputs: list[Tensor]) -> None:
        self.metrics, self.model, self.version = metrics, model, version
        self.names = tuple(t.name for t in outputs)
        self.label_output: int | None = None
        self.confidence_output: int | None = None
        self.value_output: int | None = None
        for i, t in enumerate(outputs):
            kind = t.data.dtype.kind
            if kind in "iub" and self.label_output is None and t.data.ndim <= 2:
                self.label_output = i
            elif kind == "f" and t.data.ndim == 2 and t.data.shape[1] > 1 and self.confidence_output is None:
                self.confidence_output = i
            elif kind == "f" and (t.data.ndim == 1 or (t.data.ndim == 2 and t.data.shape[1] == 1)) \
                    and self.value_output is None:
                self.value_output = i
        if self.label_output is not None:
            self.value_output = None  # a classifier: its float outputs are scores, not values
        self.classes: dict[Any, Any] = {}
        self.confidence = (metrics.prediction_confidence.labels(model, version)
                           if self.confidence_output is not None else None)
        self.value = metrics.prediction_value.labels(model, version) if self.value_output is not None else None
        self.labels: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def matches(self, outputs: list[Tensor]) -> bool:
        names = self.names
        if len(outputs) != len(names):
            return False
        for t, name in zip(outputs, names, strict=True):  # noqa: SIM110 - a loop beats all(genexpr) here
            if t.name != name:
                return False
        return True

    def collect(self, outputs: list[Tensor]) -> None:
        if self.label_output is not None:
            self.labels.append(outputs[self.label_output].data)
        if self.confidence_output is not None:
            probs = outputs[self.confidence_output].data
            if probs.ndim == 2:
                self.probs.append(probs)
        if self.value_output is not None:
            self.values.append(outputs[self.value_output].data)

    def fold(self) -> None:
        if self.labels:
            labels = np.concatenate(_take(self.labels), axis=None)
            if labels.size:
                uniq, counts = np.unique(labels, return_counts=True)
                for u, c in zip(uniq.tolist(), counts.tolist(), strict=True):
                    self._class(u)(c)
        if self.probs:
            probs = _take(self.probs)
            if self.confidence is not None:
                try:
                    top = np.concatenate(probs).max(axis=1)
                except ValueError:  # rows of different widths: one reduction each
                    top = np.concatenate([p.max(axis=1) for p in probs if p.shape[0] and p.shape[1]])
                if top.size:
                    observe_many(self.confidence, top)
        if self.values:
            values = np.concatenate(_take(self.values), axis=None)
            if self.value is not None and values.size:
                observe_many(self.value, values)

    def _class(self, value: Any) -> Any:
        inc = self.classes.get(value)
        if inc is None:
            label = str(value) if len(self.classes) < MAX_CLASSES else "other"
            inc = self.classes[value] = _fast_inc(self.metrics.predictions.labels(self.model, self.version, label))
        return inc


class _Series:
    """Label children bound once for one (model, version, route, protocol), and its prediction plan."""

    __slots__ = ("codes", "compute", "duration", "key", "metrics", "plan", "rows", "sid")

    def __init__(self, metrics: FerrymanMetrics, key: tuple[str, str, str, str], sid: int) -> None:
        self.key = key
        self.sid = sid
        self.metrics = metrics
        self.duration = metrics.request_duration.labels(key[0], key[1], key[2])
        self.compute: Any = None  # bound on the first request that reached the model
        self.rows: Any = None
        self.codes: dict[int, Any] = {}
        self.plan: _PredictionPlan | None = None

    def computed(self) -> tuple[Any, Any]:
        if self.rows is None or self.compute is None:
            model, version = self.key[0], self.key[1]
            self.compute = self.metrics.compute_duration.labels(model, version)
            self.rows = self.metrics.batch_rows.labels(model, version)
        return self.rows, self.compute

    def code(self, code: int) -> Any:
        inc = self.codes.get(code)
        if inc is None:
            inc = self.codes[code] = _fast_inc(self.metrics.requests.labels(*self.key, str(code)))
        return inc


class PrometheusObserver:
    """Feeds the request metrics (see the module docstring for what the request path does and when folds run).

    ``finished`` runs on one thread (the event loop); ``flush`` may run on any thread concurrently with it.
    """

    def __init__(self, metrics: FerrymanMetrics | None = None, *, flush_at: int = FLUSH_AT) -> None:
        self.metrics = metrics if metrics is not None else default()
        self._pending: list[tuple[int, float, int, int, float]] = []
        self._flush_at = flush_at
        self._fold_lock = threading.Lock()
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._by_sid: list[_Series] = []
        self._in_flight: dict[str, int] = {}  # model -> requests being served; the gauge is set at each flush
        self._plans: dict[tuple[str, str, tuple[str, ...]], _PredictionPlan] = {}
        self._plan_list: list[_PredictionPlan] = []
        self.metrics.attach(self)

    def started(self, model: str) -> None:
        in_flight = self._in_flight
        in_flight[model] = in_flight.get(model, 0) + 1

    def finished(self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None) -> None:
        in_flight = self._in_flight
        model = record.model
        if model in in_flight:
            in_flight[model] -= 1
        key = (record.model, record.version, record.route, record.protocol)
        series = self._series.get(key) or self._bind(key)
        pending = self._pending
        pending.append((series.sid, record.seconds, record.code, record.rows, record.compute_seconds))
        if response is not None and record.code < 400 and response.outputs:
            outputs = response.outputs
            plan = series.plan
            if plan is None or not plan.matches(outputs):
                plan = series.plan = self._plan(record, outputs)
            if plan is not None:
                plan.collect(outputs)
        if len(pending) >= self._flush_at:
            self.flush(wait=False)

    def flush(self, *, wait: bool = True) -> int:
        """Fold every pending request into the metrics; returns how many. ``wait=False`` skips the fold
        when another thread is folding. Safe against concurrent ``finished`` calls."""
        if not self._fold_lock.acquire(blocking=wait):
            return 0
        try:
            for model, count in list(self._in_flight.items()):
                self.metrics.in_flight.labels(model).set(count)
            items = _take(self._pending)
            if items:
                self._fold(items)
            for plan in self._plan_list:
                plan.fold()
            return len(items)
        finally:
            self._fold_lock.release()

    def _fold(self, items: list[tuple[int, float, int, int, float]]) -> None:
        table = np.array(items, dtype=np.float64)
        uniq, gid = np.unique(table[:, 0].astype(np.intp), return_inverse=True)
        series = [self._by_sid[s] for s in uniq.tolist()]
        ns = len(series)
        m = self.metrics
        counts, sums = _grouped_counts(gid, table[:, 1], _bounds(m.request_duration), ns)
        for s, child in enumerate(series):
            add_counts(child.duration, counts[s], sums[s])
        codes = np.clip(table[:, 2].astype(np.int64), 0, 999)
        flat, per = np.unique(gid * 1000 + codes, return_counts=True)
        for f, c in zip(flat.tolist(), per.tolist(), strict=True):
            series[f // 1000].code(f % 1000)(c)
        rows = table[:, 3]
        hit = np.flatnonzero(rows)
        if hit.size:
            hgid, compute = gid[hit], table[hit, 4]
            rcounts, rsums = _grouped_counts(hgid, rows[hit], _bounds(m.batch_rows), ns)
            ccounts, csums = _grouped_counts(hgid, compute, _bounds(m.compute_duration), ns)
            for s in np.unique(hgid).tolist():
                rows_child, compute_child = series[s].computed()
                add_counts(rows_child, rcounts[s], rsums[s])
                add_counts(compute_child, ccounts[s], csums[s])

    def _plan(self, record: RequestRecord, outputs: list[Tensor]) -> _PredictionPlan | None:
        pkey = (record.model, record.version, tuple(t.name for t in outputs))
        plan = self._plans.get(pkey)
        if plan is None:
            if len(self._plans) >= MAX_SERIES:
                return None
            plan = self._plans[pkey] = _PredictionPlan(self.metrics, record.model, record.version, outputs)
            self._plan_list.append(plan)
        return plan

    def _bind(self, key: tuple[str, str, str, str]) -> _Series:
        if len(self._series) >= MAX_SERIES:
            key = _OVERFLOW
            if key in self._series:
                return self._series[key]
        series = _Series(self.metrics, key, len(self._by_sid))
        self._by_sid.append(series)  # before the dict: a fold never sees a series id it cannot resolve
        self._series[key] = series
        return series
