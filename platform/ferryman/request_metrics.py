"""The request observer: what the data plane reports per request, kept as plain counts, published in bulk.

Request path (:meth:`PrometheusObserver.finished`, or ``finished_many`` for a loop turn's requests): per
histogram one ``bisect`` into its bucket bounds, one increment of a Python list slot and one float addition;
per status code one dict increment; for a successful answer, the prediction distribution the same way (a
response of a few rows is read with ``tolist()``, a large batch with a few numpy calls). These are
*cumulative* counts written by one thread at a time (the event loop, or a reader draining the deferred
observer's queue under its lock, see ``ferryman.telemetry``); nothing is queued here, so there is no pile of
pending requests to fold and no pause on the request path,
and nothing is tracked by Python's cyclic garbage collector.

:meth:`PrometheusObserver.flush` publishes what changed since the last flush into the ``prometheus_client``
children: O(series x buckets) increments, whatever the number of requests. It may run on another thread
than ``finished`` (the multiprocess timer): it only reads the cumulative counts, so a request counted while it
reads is published by the next flush, never lost or counted twice. Flushes happen on every collection of the
metrics' registry (a scrape, ``get_sample_value``), every ``FLUSH_INTERVAL_SECONDS`` in multiprocess mode and
at shutdown (:meth:`FerrymanMetrics.flush`).

The first version of this module queued one tuple per request and folded 1,024 of them with numpy on the
request path: about 1.4 ms of pause every 1,024 requests, felt by every request in flight at that moment,
which is what a p99 at 16 connections is made of.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.ma  # np.unique (large label batches) imports it lazily: 70 ms on the first such request

from ferryman._compat.prometheus import fast_inc, histogram_parts
from ferryman.metrics import MAX_CLASSES, MAX_SERIES, FerrymanMetrics, default
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.telemetry import Finished, RequestObserver, RequestRecord, Settle

SMALL = 16  # outputs of at most this many elements are read in Python; larger ones with numpy
SMALL_CLASS_IDS = 4_096  # integer labels in 0..this-1 are counted with one bincount (larger: np.unique)
_OVERFLOW = ("_overflow_", "", "", "")
_OTHER = object()  # the class label key every label beyond MAX_CLASSES counts under


class _Hist:
    """Cumulative bucket counts and sum of one histogram child (one writer thread), and what was published."""

    __slots__ = ("array_bounds", "bounds", "buckets", "child", "counts", "sent", "sent_sum", "sum", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds, self.buckets, self.sum = histogram_parts(child)  # bounds: +Inf last
        self.array_bounds = np.asarray(self.bounds, dtype=np.float64)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.sent = [0] * len(self.bounds)
        self.sent_sum = 0.0

    def add(self, value: float) -> None:
        """One observation (a finite number; ``le`` semantics: the first bucket whose bound is >= value)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: np.ndarray) -> None:
        """Many observations; the values that are not finite are left out."""
        values = values.astype(np.float64, copy=False)
        total = float(values.sum())
        if (
            total - total != 0.0
        ):  # a NaN or an infinity among them (or a sum that overflowed): keep the finite
            values = values[np.isfinite(values)]
            total = float(values.sum())
        if values.size == 0:
            return
        counts = self.counts
        per = np.bincount(self.array_bounds.searchsorted(values, side="left"), minlength=len(counts))
        for i in np.flatnonzero(per).tolist():
            counts[i] += int(per[i])
        self.total += total

    def publish(self) -> int:
        """Increment the child by what was added since the last publish; returns how many observations."""
        counts, sent, buckets = self.counts, self.sent, self.buckets
        total = self.total  # read before the counts: a sum never runs ahead of its buckets for long
        moved = 0
        for i in range(len(counts)):
            c = counts[i]
            d = c - sent[i]
            if d:
                buckets[i].inc(d)
                sent[i] = c
                moved += d
        if total != self.sent_sum:
            self.sum.inc(total - self.sent_sum)
            self.sent_sum = total
        return moved


class _Counts:
    """Cumulative counts per key (one writer thread) published into counter children bound lazily; beyond
    ``limit`` distinct keys, new keys count under ``other``."""

    __slots__ = ("bind", "counts", "incs", "limit", "other", "sent")

    def __init__(self, bind: Any, *, limit: int = 1_000, other: Any = None) -> None:
        self.bind = bind  # key -> the bound increment of its counter child
        self.limit, self.other = limit, other
        self.counts: dict[Any, int] = {}
        self.sent: dict[Any, int] = {}
        self.incs: dict[Any, Any] = {}

    def add(self, key: Any, n: int = 1) -> None:
        counts = self.counts
        c = counts.get(key)
        if c is None:
            if len(counts) >= self.limit:
                key = self.other
            c = counts.get(key, 0)
        counts[key] = c + n

    def publish(self) -> None:
        sent = self.sent
        for key, c in list(self.counts.items()):  # list() copies in one step: the writer may add keys
            d = c - sent.get(key, 0)
            if d:
                inc = self.incs.get(key)
                if inc is None:
                    inc = self.incs[key] = self.bind(key)
                inc(d)
                sent[key] = c


class _PredictionPlan:
    """Which response outputs feed the prediction distribution for one (model, version, output names), and
    their cumulative counts: class labels, the top class probability, or a regressor's values."""

    __slots__ = (
        "classes",
        "confidence",
        "confidence_output",
        "label_output",
        "metrics",
        "model",
        "names",
        "value",
        "value_output",
        "version",
    )

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
            elif (
                kind == "f"
                and (t.data.ndim == 1 or (t.data.ndim == 2 and t.data.shape[1] == 1))
                and self.value_output is None
            ):
                self.value_output = i
        if self.label_output is not None:
            self.value_output = None  # a classifier: its float outputs are scores, not values
        self.classes = _Counts(self._class, limit=MAX_CLASSES, other=_OTHER)
        self.confidence = (
            _Hist(metrics.prediction_confidence.labels(model, version))
            if self.confidence_output is not None
            else None
        )
        self.value = (
            _Hist(metrics.prediction_value.labels(model, version)) if self.value_output is not None else None
        )

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
            labels = outputs[self.label_output].data
            n = labels.size
            if n == 1:
                self.classes.add(labels.item())
            elif n <= SMALL:
                for label in labels.ravel().tolist():
                    self.classes.add(label)
            elif n:
                self._count_labels(labels.ravel())
        if self.confidence is not None:
            probs = outputs[self.confidence_output].data  # type: ignore[index]
            n = probs.size
            if n <= SMALL:
                if n and probs.ndim == 2:
                    for row in probs.tolist():
                        top = max(row)
                        if top - top == 0.0:  # finite
                            self.confidence.add(top)
            elif probs.ndim == 2 and probs.shape[1]:
                self.confidence.add_many(probs.max(axis=1))
        if self.value is not None:
            values = outputs[self.value_output].data  # type: ignore[index]
            if values.size <= SMALL:
                for v in values.ravel().tolist():
                    if v - v == 0.0:  # finite
                        self.value.add(v)
            else:
                self.value.add_many(values.ravel())

    def _count_labels(self, labels: np.ndarray) -> None:
        """Class counts of a large batch: one ``bincount`` for small non-negative integer classes (the usual
        0..k-1), a sort (``np.unique``) otherwise."""
        if labels.dtype.kind in "iu":
            lo, hi = int(labels.min()), int(labels.max())
            if lo >= 0 and hi < SMALL_CLASS_IDS:
                per = np.bincount(labels.astype(np.intp, copy=False))
                for label in np.flatnonzero(per).tolist():
                    self.classes.add(label, int(per[label]))
                return
        uniq, counts = np.unique(labels, return_counts=True)
        for label, k in zip(uniq.tolist(), counts.tolist(), strict=True):
            self.classes.add(label, k)

    def publish(self) -> None:
        self.classes.publish()
        if self.confidence is not None:
            self.confidence.publish()
        if self.value is not None:
            self.value.publish()

    def _class(self, value: Any) -> Any:
        label = "other" if value is _OTHER else str(value)
        return fast_inc(self.metrics.predictions.labels(self.model, self.version, label))


class _Series:
    """Cumulative counts for one (model, version, route, protocol), bound to its children, and its plan."""

    __slots__ = ("codes", "compute", "computed", "duration", "key", "metrics", "plan", "rows")

    def __init__(self, metrics: FerrymanMetrics, key: tuple[str, str, str, str]) -> None:
        self.key = key
        self.metrics = metrics
        self.duration = _Hist(metrics.request_duration.labels(key[0], key[1], key[2]))
        self.compute: _Hist | None = None  # bound on the first request that reached the model
        self.rows: _Hist | None = None
        self.computed: tuple[_Hist, _Hist] | None = None  # (rows, compute), once bound
        self.codes = _Counts(self._code, limit=1_000, other=0)
        self.plan: _PredictionPlan | None = None

    def bind_computed(self) -> tuple[_Hist, _Hist]:
        if self.rows is None or self.compute is None:
            model, version = self.key[0], self.key[1]
            self.compute = _Hist(self.metrics.compute_duration.labels(model, version))
            self.rows = _Hist(self.metrics.batch_rows.labels(model, version))
        self.computed = (self.rows, self.compute)
        return self.computed

    def publish(self) -> int:
        moved = self.duration.publish()
        self.codes.publish()
        if self.compute is not None and self.rows is not None:
            self.compute.publish()
            self.rows.publish()
        return moved

    def _code(self, code: int) -> Any:
        return fast_inc(self.metrics.requests.labels(*self.key, str(code)))


class PrometheusObserver(RequestObserver):
    """Feeds the request metrics (see the module docstring for what the request path does and when it is
    published). ``finished`` runs on one thread (the event loop); ``flush`` may run on any thread and
    calls ``settle`` first (the hook of the deferred observer in front, if any)."""

    def __init__(self, metrics: FerrymanMetrics | None = None, *, settle: Settle | None = None) -> None:
        self.metrics = metrics if metrics is not None else default()
        self.settle = settle if settle is not None else Settle()
        self._publish_lock = threading.Lock()
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._series_list: list[_Series] = []
        self._in_flight: dict[str, int] = {}  # model -> requests being served; the gauge is set at each flush
        self._plans: dict[tuple[str, str, tuple[str, ...]], _PredictionPlan] = {}
        self._plan_list: list[_PredictionPlan] = []
        self.metrics.attach(self)

    def started(self, model: str) -> None:
        in_flight = self._in_flight
        in_flight[model] = in_flight.get(model, 0) + 1

    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        self.finished_many(((record, request, response),))

    def finished_many(self, batch: Sequence[Finished]) -> None:
        in_flight = self._in_flight
        all_series = self._series
        # the histogram and counter updates of _Hist.add / _Counts.add, inlined: this runs for every request
        for record, _, response in batch:
            model = record.model
            if model in in_flight:
                in_flight[model] -= 1
            key = (model, record.version, record.route, record.protocol)
            series = all_series.get(key) or self._bind(key)
            seconds = record.seconds
            hist = series.duration
            hist.counts[bisect_left(hist.bounds, seconds)] += 1
            hist.total += seconds
            code = record.code
            codes = series.codes.counts
            if code in codes:
                codes[code] += 1
            else:
                series.codes.add(code if 0 <= code <= 999 else 0)
            rows = record.rows
            if rows:
                rows_hist, compute_hist = series.computed or series.bind_computed()
                rows_hist.counts[bisect_left(rows_hist.bounds, rows)] += 1
                rows_hist.total += rows
                seconds = record.compute_seconds
                compute_hist.counts[bisect_left(compute_hist.bounds, seconds)] += 1
                compute_hist.total += seconds
            if response is not None and code < 400 and response.outputs:
                outputs = response.outputs
                plan = series.plan
                if plan is None or not plan.matches(outputs):
                    plan = series.plan = self._plan(record, outputs)
                if plan is not None:
                    plan.collect(outputs)

    def flush(self, *, wait: bool = True) -> int:
        """Publish everything counted since the last flush; returns how many requests. ``wait=False`` skips
        it when another thread is publishing. Safe against concurrent ``finished`` calls."""
        self.settle()
        if not self._publish_lock.acquire(blocking=wait):
            return 0
        try:
            for model, count in list(self._in_flight.items()):
                self.metrics.in_flight.labels(model).set(count)
            moved = sum(series.publish() for series in list(self._series_list))
            for plan in list(self._plan_list):
                plan.publish()
            return moved
        finally:
            self._publish_lock.release()

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
        series = _Series(self.metrics, key)
        self._series_list.append(series)
        self._series[key] = series
        return series
