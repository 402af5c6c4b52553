"""The drift monitor: per version, a sampled window of live rows, Evidently runs off the request path.

Request path (``observe_request``): a counter-based sampler (``sample_percent``, no random draw), then a
rate gate, a token bucket per version: a burst of up to one window's worth of rows, and at most
``windows_per_second`` windows' worth per second under sustained traffic, which then spreads the kept
requests evenly over time. A request that passes writes its rows and its prediction into the version's
numpy ring buffer under the window's lock (a slice copy); the others are only counted. So the cost is bounded
whatever the traffic (about 1,000 row writes a second for a 500-row window), nothing is queued, the worker
never folds a backlog on the GIL (an earlier design queued references and folded them in bulk every 0.5 s: a 2
ms pause for the requests in flight each time), and nothing the cyclic garbage collector has to trace is kept.
``observe`` (rows given directly: tests, tools) pushes into the window at once.

Worker thread: sleeps until woken; when ``every_rows`` new rows arrived (and, if ``interval_seconds`` is
set, on that schedule whenever new rows arrived), it snapshots the window and hands a :class:`DriftJob` to a
runner (by default a dedicated child process at idle CPU priority, see ``runners.py``). Runs of one version
are at least ``min_interval_seconds`` apart whatever the traffic, so drift costs at most one run's CPU per
interval (at 1,000 req/s, "every 250 rows" alone would mean four runs a second). The result becomes
Prometheus gauges and the latest :class:`DriftReport`, which the rollout analysis reads through
:meth:`DriftMonitor.drift_share`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ferryman.drift.job import ENGINES, DriftJob
from ferryman.drift.report import DriftReport
from ferryman.drift.runners import RUNNERS, Runner, make_runner
from ferryman.drift.window import RingWindow
from ferryman.spec import Drift

if TYPE_CHECKING:
    from ferryman.metrics import FerrymanMetrics
    from ferryman.protocol.tensor import InferRequest, InferResponse

log = logging.getLogger("ferryman.drift")

PREDICTION_OPS = ("label", "argmax", "value")


# The fields a ModelDeployment's ``spec.drift`` sets: their defaults are the spec's (``ferryman.spec.Drift``),
# declared there once; the other fields are runtime settings the spec does not carry.
FROM_SPEC = (
    "window_size",
    "every_rows",
    "threshold",
    "sample_percent",
    "windows_per_second",
    "min_interval_seconds",
)
_SPEC = Drift()


@dataclass(frozen=True, slots=True)
class DriftConfig:
    window_size: int = _SPEC.window_size
    every_rows: int = _SPEC.every_rows
    threshold: float = _SPEC.threshold  # drift share at or above which the version counts as drifted
    sample_percent: float = _SPEC.sample_percent
    interval_seconds: float | None = None  # also run on this schedule when new rows arrived
    min_interval_seconds: float = _SPEC.min_interval_seconds  # never run one version more often than this
    min_rows: int = 30  # never judge a window holding fewer live rows
    windows_per_second: float = (
        _SPEC.windows_per_second
    )  # rate gate: sustained, at most this many windows a second
    engine: str = "stattest"
    isolation: str = "process"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"drift engine must be one of {ENGINES}, got {self.engine!r}")
        if self.isolation not in RUNNERS:
            raise ValueError(f"drift isolation must be one of {RUNNERS}, got {self.isolation!r}")
        if self.window_size < 1 or self.every_rows < 1:
            raise ValueError("window_size and every_rows must be positive")
        if self.min_interval_seconds < 0:
            raise ValueError("min_interval_seconds must not be negative")
        if not self.windows_per_second > 0:
            raise ValueError("windows_per_second must be positive (inf: no rate gate)")

    @classmethod
    def from_spec(cls, drift: Drift, **overrides: object) -> DriftConfig:
        """The spec's drift settings (``FROM_SPEC``), then ``overrides`` (runtime settings, tests)."""
        base = cls(**{name: getattr(drift, name) for name in FROM_SPEC})  # type: ignore[arg-type]
        return replace(base, **overrides)  # type: ignore[arg-type]


class _Version:
    __slots__ = (
        "epoch",
        "feature_names",
        "input_name",
        "last_start",
        "lock",
        "pending",
        "prediction_kind",
        "prediction_op",
        "prediction_output",
        "rate",
        "reference",
        "reference_predictions",
        "refilled",
        "report",
        "runs",
        "skipped",
        "skipped_at_run",
        "tokens",
        "version",
        "window",
    )

    def __init__(
        self,
        version: str,
        *,
        reference: np.ndarray,
        feature_names: list[str],
        window_size: int,
        reference_predictions: np.ndarray | None,
        prediction_kind: str | None,
        input_name: str | None,
        prediction_output: str | None,
        prediction_op: str | None,
        windows_per_second: float,
    ) -> None:
        self.version = version
        self.reference = reference
        self.feature_names = feature_names
        self.reference_predictions = reference_predictions
        self.prediction_kind = prediction_kind
        self.input_name = input_name
        self.prediction_output = prediction_output
        self.prediction_op = prediction_op
        self.window = RingWindow(window_size, reference.shape[1])
        # the rate gate (request thread only): a token bucket of rows, one window deep
        self.rate = min(windows_per_second * window_size, 1e18)  # rows per second (inf: no gate)
        self.tokens = float(window_size)
        self.refilled = time.monotonic()
        # rows the gate let pass by (request thread only, no lock), and that count at the last run
        self.skipped = 0
        self.skipped_at_run = 0
        self.lock = threading.Lock()
        self.pending = False
        self.report: DriftReport | None = None
        self.runs = 0
        self.last_start = -float("inf")  # monotonic time the last run began
        self.epoch = 0  # bumped by reset(): a run that began before it must not publish

    def since_run(self) -> int:
        """Live rows since the last run, kept or not (a racy read of the lock-free count is fine here)."""
        return self.window.since_run + self.skipped - self.skipped_at_run

    def seen(self) -> int:
        return self.window.total + self.skipped


class DriftMonitor:
    """Drift monitoring for the versions of one model. Thread-safe; ``start()`` launches the worker."""

    def __init__(
        self,
        model: str,
        *,
        config: DriftConfig | None = None,
        metrics: FerrymanMetrics | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.model = model
        self.config = config or DriftConfig()
        self._metrics = metrics
        self._runner = runner
        self._versions: dict[str, _Version] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_tick = time.monotonic()
        self._sample_credit = 100.0  # counter-based sampler: the first request is always taken

    # -- setup --------------------------------------------------------------------------------------
    def add_version(
        self,
        version: str,
        *,
        reference: np.ndarray,
        feature_names: Sequence[str] | None = None,
        reference_predictions: np.ndarray | None = None,
        prediction_kind: str | None = None,
        input_name: str | None = None,
        prediction_output: str | None = None,
        prediction_op: str | None = None,
    ) -> None:
        """Register a version with its reference rows (n, features) and optional reference predictions.

        ``input_name``/``prediction_output``/``prediction_op`` tell :meth:`observe_request` which request
        input holds the features and how to read one prediction per row from which output
        (``label``: an integer class output, ``argmax``: class of a probability matrix, ``value``).
        """
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < 2 or ref.shape[1] < 1:
            raise ValueError(
                f"version {version!r}: reference data must be a 2-D array with rows, got {ref.shape}"
            )
        names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(ref.shape[1])]
        if len(names) != ref.shape[1]:
            raise ValueError(f"version {version!r}: {len(names)} feature names for {ref.shape[1]} columns")
        if prediction_op is not None and prediction_op not in PREDICTION_OPS:
            raise ValueError(f"prediction_op must be one of {PREDICTION_OPS}")
        ref_pred = (
            None if reference_predictions is None else np.asarray(reference_predictions, np.float64).ravel()
        )
        self._versions[version] = _Version(
            version,
            reference=ref,
            feature_names=names,
            window_size=self.config.window_size,
            reference_predictions=ref_pred,
            prediction_kind=prediction_kind if ref_pred is not None else None,
            input_name=input_name,
            prediction_output=prediction_output,
            prediction_op=prediction_op,
            windows_per_second=self.config.windows_per_second,
        )
        if self._metrics is not None:
            self._metrics.drift_threshold.labels(self.model).set(self.config.threshold)

    @property
    def versions(self) -> list[str]:
        return sorted(self._versions)

    def __contains__(self, version: object) -> bool:
        return version in self._versions

    # -- request path -------------------------------------------------------------------------------
    def observe(self, version: str, rows: np.ndarray, predictions: np.ndarray | None = None) -> None:
        """Sample live rows (n, features) of ``version`` into its window. Cheap; never raises on bad
        shapes."""
        state = self._versions.get(version)
        if state is None or not self._sampled():
            return
        if rows.ndim != 2 or rows.shape[1] != state.window.width:
            return
        if predictions is not None and predictions.shape[0] != rows.shape[0]:
            predictions = None
        with state.lock:
            state.window.push(rows, predictions)
            due = state.window.since_run >= self.config.every_rows and not state.pending
            if due:
                state.pending = True
        if due:
            self._wake.set()

    def _sampled(self) -> bool:
        """Take ``sample_percent`` of the calls, evenly spread: a credit counter, no random draw."""
        pct = self.config.sample_percent
        if pct >= 100.0:
            return True
        if pct <= 0.0:
            return False
        credit = self._sample_credit + pct
        if credit < 100.0:
            self._sample_credit = credit
            return False
        self._sample_credit = credit - 100.0
        return True

    def observe_request(self, version: str, request: InferRequest, response: InferResponse | None) -> None:
        """The request path: count the request's feature rows; when the rate gate lets it through, write
        them (and one prediction per row) into the window. Never raises on odd inputs: they are skipped."""
        if self.config.sample_percent < 100.0 and not self._sampled():
            return
        state = self._versions.get(version)
        if state is None:
            return
        data = _feature_array(state, request)
        if data is None:
            return
        window = state.window
        n = data.size // window.width
        # the token bucket, inlined: this runs for every request
        now = time.monotonic()
        capacity = window.capacity
        tokens = state.tokens + (now - state.refilled) * state.rate
        state.refilled = now
        if tokens > capacity:
            tokens = capacity
        if tokens >= n or tokens >= capacity:  # a batch larger than the window passes on a full bucket
            state.tokens = tokens - n
            output = state.prediction_output
            out = None if response is None or output is None else _output_array(response, output)
            predictions = None if out is None else _read_predictions(out, state.prediction_op, n)
            rows = data.reshape(n, window.width)
            with state.lock:
                window.push(rows, predictions)
        else:
            state.tokens = tokens
            state.skipped += n  # no lock: only this thread writes it
        if state.pending or state.since_run() < self.config.every_rows:
            return
        with state.lock:
            due = not state.pending
            state.pending = True
        if due:
            self._wake.set()

    # -- worker -------------------------------------------------------------------------------------
    def start(self) -> DriftMonitor:
        if self._thread is not None:
            return self
        if self._runner is None:
            self._runner = make_runner(self.config.isolation, engine=self.config.engine)
        warm = getattr(self._runner, "start", None)
        if warm is not None:
            # start the drift process now: its Evidently import overlaps start-up, not the first window
            warm()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"ferryman-drift-{self.model}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        timeout: float | None = self.config.interval_seconds
        while not self._stop.is_set():
            self._wake.wait(timeout=timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                timeout = self._work()
            except Exception:  # the worker must outlive any bad fold or run
                log.exception("drift worker for %s: unexpected error", self.model)
                timeout = self.config.interval_seconds

    def _work(self) -> float | None:
        """One wake-up of the worker: run the versions that are due; the next timeout."""
        interval = self.config.interval_seconds
        now = time.monotonic()
        scheduled = interval is not None and now - self._last_tick >= interval
        if scheduled:
            self._last_tick = now
        timeout = interval
        for state in list(self._versions.values()):
            with state.lock:
                due = state.pending or (scheduled and state.since_run() > 0)
                if scheduled and due:
                    state.pending = True  # remembered if it must wait for the minimum interval
            if not due:
                continue
            wait = state.last_start + self.config.min_interval_seconds - time.monotonic()
            if wait > 0:  # too soon after the last run: come back when it is allowed
                timeout = wait if timeout is None else min(timeout, wait)
                continue
            self._run(state)
        return timeout

    def engine_ready(self) -> bool:
        """Whether the drift engine is loaded (its process finished importing Evidently)."""
        return self._runner is not None and self._runner.ready()

    def run_now(self, version: str) -> DriftReport:
        """Run drift detection for ``version`` synchronously in this thread (CLI and tests)."""
        state = self._versions[version]
        if self._runner is None:
            self._runner = make_runner(self.config.isolation, engine=self.config.engine)
        self._run(state)
        return self.report(version)

    def _run(self, state: _Version) -> None:
        state.last_start = time.monotonic()
        with state.lock:
            epoch = state.epoch
            current, predictions = state.window.snapshot()
            state.window.since_run = 0
            state.skipped_at_run = state.skipped
            state.pending = False
            seen = state.seen()
        if current.shape[0] < min(self.config.min_rows, self.config.window_size):
            return
        cur_pred = predictions[np.isfinite(predictions)] if state.reference_predictions is not None else None
        job = DriftJob(
            engine=self.config.engine,
            reference=state.reference,
            current=current,
            feature_names=state.feature_names,
            drift_share=self.config.threshold,
            reference_predictions=state.reference_predictions,
            current_predictions=cur_pred if cur_pred is not None and cur_pred.size else None,
            prediction_kind=state.prediction_kind,
        )
        assert self._runner is not None
        try:
            result = self._runner.run(job)
        except Exception as err:
            log.warning("drift run for %s/%s failed: %s", self.model, state.version, err)
            if self._metrics is not None:
                self._metrics.record_drift_error(self.model, state.version)
            previous = state.report
            report = DriftReport(
                model=self.model,
                version=state.version,
                share=previous.share if previous else None,
                drifted=previous.drifted if previous else None,
                threshold=self.config.threshold,
                features=previous.features if previous else (),
                prediction=previous.prediction if previous else None,
                window_rows=current.shape[0],
                reference_rows=state.reference.shape[0],
                rows_seen=seen,
                last_run=previous.last_run if previous else None,
                run_seconds=None,
                engine=self.config.engine,
                error=str(err),
            )
            self._publish(state, report, epoch=epoch)
            return
        if state.epoch != epoch:  # reset while running: these rows belong to a rollout that is over
            return
        elapsed = result.seconds
        now = time.time()
        report = DriftReport(
            model=self.model,
            version=state.version,
            share=result.share,
            drifted=result.share >= self.config.threshold,
            threshold=self.config.threshold,
            features=result.features,
            prediction=result.prediction,
            window_rows=current.shape[0],
            reference_rows=state.reference.shape[0],
            rows_seen=seen,
            last_run=now,
            run_seconds=elapsed,
            engine=self.config.engine,
        )
        if self._metrics is not None:
            pred = result.prediction
            self._metrics.record_drift(
                self.model,
                state.version,
                scores={f.name: f.score for f in result.features},
                drifted={f.name: f.drifted for f in result.features},
                share=result.share,
                detected=bool(report.drifted),
                window_rows=current.shape[0],
                threshold=self.config.threshold,
                prediction_score=pred.score if pred else None,
                prediction_drifted=pred.drifted if pred else None,
                run_seconds=elapsed,
                at=now,
            )
        self._publish(state, report, epoch=epoch)

    def _publish(self, state: _Version, report: DriftReport, *, epoch: int) -> None:
        with self._done:
            if state.epoch != epoch:
                return
            state.report = report
            state.runs += 1
            self._done.notify_all()

    # -- reading (the rollout analysis, status, tests) ----------------------------------------------
    def drift_share(self, version: str) -> float | None:
        """The latest drift share of ``version``; None before its first completed run."""
        state = self._versions.get(version)
        return None if state is None or state.report is None else state.report.share

    def measured_at(self, version: str) -> float | None:
        """Wall-clock time of the run behind :meth:`drift_share`; None before the first."""
        state = self._versions.get(version)
        return None if state is None or state.report is None else state.report.last_run

    def reset(self, version: str) -> None:
        """Forget ``version``'s live rows and its last result (a new rollout of it starts): until its next
        run, :meth:`drift_share` is None. A run in progress finishes without publishing."""
        state = self._versions.get(version)
        if state is None:
            return
        with self._done, state.lock:
            state.epoch += 1
            window = state.window
            window.pos = window.size = window.since_run = 0
            window.predictions[:] = np.nan
            state.skipped_at_run = state.skipped
            state.pending = False
            state.report = None

    def is_drifted(self, version: str) -> bool | None:
        state = self._versions.get(version)
        return None if state is None or state.report is None else state.report.drifted

    def runs(self, version: str) -> int:
        """Completed runs of ``version`` so far."""
        return self._versions[version].runs

    def rows_seen(self, version: str) -> int:
        """Live rows sampled for ``version`` so far (reports carry the count at their run)."""
        state = self._versions[version]
        with state.lock:
            return state.seen()

    def report(self, version: str) -> DriftReport:
        state = self._versions[version]
        if state.report is not None:
            return state.report
        with state.lock:
            size, seen = state.window.size, state.seen()
        return DriftReport(
            model=self.model,
            version=version,
            share=None,
            drifted=None,
            threshold=self.config.threshold,
            features=(),
            prediction=None,
            window_rows=size,
            reference_rows=state.reference.shape[0],
            rows_seen=seen,
            last_run=None,
            run_seconds=None,
            engine=self.config.engine,
        )

    def reports(self) -> dict[str, DriftReport]:
        return {v: self.report(v) for v in self.versions}

    def wait_for_run(self, version: str, *, after: int, timeout: float) -> DriftReport | None:
        """Block until ``version`` has completed more than ``after`` runs; None on timeout."""
        state = self._versions[version]
        with self._done:
            if not self._done.wait_for(lambda: state.runs > after, timeout=timeout):
                return None
        return state.report


def _feature_array(state: _Version, request: InferRequest) -> np.ndarray | None:
    """The request's feature tensor (whole rows of the window's width), or None when it has none."""
    inputs = request.inputs
    if not inputs:
        return None
    tensor = inputs[0]
    if state.input_name is not None and tensor.name != state.input_name:
        tensor = next((t for t in inputs if t.name == state.input_name), None)  # type: ignore[assignment]
        if tensor is None:
            return None
    data = tensor.data
    if (
        type(data) is not np.ndarray
        or data.dtype.kind not in "fiub"
        or not data.size
        or data.size % state.window.width
    ):
        return None
    return data


def _output_array(response: InferResponse, output: str) -> np.ndarray | None:
    outputs = response.outputs
    if outputs and outputs[0].name == output:
        return outputs[0].data
    tensor = next((t for t in outputs if t.name == output), None)
    return None if tensor is None else tensor.data


def _read_predictions(data: np.ndarray, op: str | None, rows: int) -> np.ndarray | None:
    if op == "argmax" and data.ndim == 2:
        values = data.argmax(axis=1)
    else:
        values = data.reshape(-1) if data.ndim <= 1 or data.shape[-1] == 1 else None
    if values is None or values.shape[0] != rows:
        return None
    return values.astype(np.float64, copy=False)
