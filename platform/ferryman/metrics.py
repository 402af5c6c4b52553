"""Every Prometheus metric ferryman exports, declared once (``FerrymanMetrics``), and the setters the
rollout drivers and the drift monitor call.

Module-level functions act on the process-wide default :class:`FerrymanMetrics`; tests build their own
instance on a private ``CollectorRegistry`` and call the same methods on it:

    set_traffic_weights(model, {"v1": 95, "v2": 5}, *, shadow={"v2": 10})   # percent, 0..100
    set_rollout_state(model, *, phase="Progressing", step=1, steps=4)       # step = index into canary steps
    record_analysis(model, version, outcome, *, p99_seconds=None, error_ratio=None)
        outcome: "advance" | "hold" | "promote" | "rollback" (synonyms such as "rolled_back" are folded)
    set_model_ready(model, version, ready)                 # drives the "model not ready" alert
    set_budget(model, *, p99_seconds, max_error_ratio)     # the SLO line on the dashboards
    record_drift(...)                                      # called by ferryman.drift, not by hand

Elsewhere: the request observer that feeds the request metrics is ``ferryman.request_metrics``; when its
counts are published, ``ferryman.metrics_flush``; ``GET /metrics`` and multiprocess mode,
``ferryman.metrics_exposition``.

Label sets are bounded: model and version come from the loaded repository (unknown models are rejected
before any metric is touched), route/protocol/code/outcome/phase are small enums, features are capped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ferryman import metrics_flush

# Dense below the 100 ms budget, with a bucket boundary exactly at 0.1 s (the SLO threshold).
REQUEST_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.06,
    0.07,
    0.08,
    0.09,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
COMPUTE_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
# requests merged into one run by adaptive batching (spec maxBatchSize is at most 4096 rows)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 4096)
QUEUE_DELAY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)
CONFIDENCE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
VALUE_BUCKETS: tuple[float, ...] = (-1000, -100, -10, -1, -0.1, 0, 0.1, 1, 10, 100, 1000)
DRIFT_RUN_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ANALYSIS_OUTCOMES = ("advance", "hold", "promote", "rollback")
# ferryman.rollout.Phase values, normalized (RolledBack -> rolled_back); other phases are accepted too.
ROLLOUT_PHASES = ("stable", "progressing", "running", "paused", "promoted", "rolled_back")
_OUTCOME_SYNONYMS = {
    "advanced": "advance",
    "step": "advance",
    "held": "hold",
    "wait": "hold",
    "promoted": "promote",
    "roll_back": "rollback",
    "rolled_back": "rollback",
    "rolledback": "rollback",
    "abort": "rollback",
}
MAX_CLASSES = 32  # distinct predicted classes per version; more are counted as class="other"
MAX_FEATURES = 128  # per-feature drift series per version; the drift share still covers every feature
MAX_SERIES = 4096  # distinct (model, version, route, protocol) keys bound by one observer


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_") or "unknown"


def normalize_outcome(outcome: str) -> str:
    o = _snake(outcome)
    o = _OUTCOME_SYNONYMS.get(o, o)
    return o if o in ANALYSIS_OUTCOMES else "other"


def normalize_phase(phase: str) -> str:
    return _snake(phase)


class FerrymanMetrics:
    """The metric families, created together on one registry (the default one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # *_created series are noise for us (and double the count)
        prometheus_client.disable_created_metrics()
        reg = registry if registry is not None else prometheus_client.REGISTRY
        self.registry = reg
        self._lock = threading.Lock()
        # strong references: a dropped observer's unpublished counts still count
        self._observers: list[metrics_flush.Flushable] = []
        reg.register(metrics_flush.FlushOnCollect(self))  # first: every collection publishes before reading
        metrics_flush.track(self)
        self._phases: dict[str, set[str]] = {}
        self._weighted: dict[str, set[str]] = {}
        # -- data plane --------------------------------------------------------------------------
        self.request_duration = Histogram(
            "ferryman_request_duration_seconds",
            "End-to-end request duration (body read to response sent).",
            ("model", "version", "route"),
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "ferryman_requests",
            "Inference requests by protocol and HTTP status code.",
            ("model", "version", "route", "protocol", "code"),
            registry=reg,
        )
        self.in_flight = Gauge(
            "ferryman_requests_in_flight",
            "Inference requests being served.",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.compute_duration = Histogram(
            "ferryman_model_compute_duration_seconds",
            "Model compute (ONNX Runtime run) duration.",
            ("model", "version"),
            buckets=COMPUTE_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "ferryman_batch_rows",
            "Rows per model call (batch size).",
            ("model", "version"),
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "ferryman_batch_size",
            "Requests merged into one model run by adaptive batching.",
            ("model", "version"),
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.batch_queue_delay = Histogram(
            "ferryman_batch_queue_delay_seconds",
            "Time a request waited in its version's batch queue before its run.",
            ("model", "version"),
            buckets=QUEUE_DELAY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "ferryman_predictions",
            "Predicted rows per class (classifiers).",
            ("model", "version", "class"),
            registry=reg,
        )
        self.prediction_confidence = Histogram(
            "ferryman_prediction_confidence",
            "Top-class probability per predicted row (classifiers).",
            ("model", "version"),
            buckets=CONFIDENCE_BUCKETS,
            registry=reg,
        )
        self.prediction_value = Histogram(
            "ferryman_prediction_value",
            "Predicted value per row (regressors).",
            ("model", "version"),
            buckets=VALUE_BUCKETS,
            registry=reg,
        )
        self.model_ready = Gauge(
            "ferryman_model_ready",
            "1 when the version is loaded and serving.",
            ("model", "version"),
            multiprocess_mode="livemin",
            registry=reg,
        )
        self.budget_p99 = Gauge(
            "ferryman_budget_p99_seconds",
            "Latency budget (p99) from the spec.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.budget_errors = Gauge(
            "ferryman_budget_error_ratio",
            "Maximum error ratio from the spec.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        # -- traffic and rollout -----------------------------------------------------------------
        self.traffic_weight = Gauge(
            "ferryman_traffic_weight_ratio",
            "Share of traffic routed to a version.",
            ("model", "version"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.shadow_ratio = Gauge(
            "ferryman_traffic_shadow_ratio",
            "Share of traffic mirrored to a version.",
            ("model", "version"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.rollout_phase = Gauge(
            "ferryman_rollout_phase",
            "1 for the rollout's current phase, else 0.",
            ("model", "phase"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.rollout_step = Gauge(
            "ferryman_rollout_step",
            "Index of the current canary step (0-based; -1: no step active, e.g. promoted).",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.rollout_steps = Gauge(
            "ferryman_rollout_steps",
            "Number of canary steps in the rollout.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.analysis = Counter(
            "ferryman_rollout_analysis",
            "Rollout analysis outcomes.",
            ("model", "version", "outcome"),
            registry=reg,
        )
        self.analysis_p99 = Gauge(
            "ferryman_rollout_analysis_p99_seconds",
            "p99 seen by the last analysis.",
            ("model", "version"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.analysis_errors = Gauge(
            "ferryman_rollout_analysis_error_ratio",
            "Error ratio seen by the last analysis.",
            ("model", "version"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.analysis_time = Gauge(
            "ferryman_rollout_last_analysis_timestamp_seconds",
            "Time of the last analysis.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.spec_reloads = Counter(
            "ferryman_spec_reloads",
            "Attempts to adopt an edited spec, by result (accepted, rejected).",
            ("model", "result"),
            registry=reg,
        )
        self.spec_reload_rejected = Gauge(
            "ferryman_spec_reload_rejected",
            "1 while the last spec edit was rejected: the file on disk is not what runs.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        # -- drift -------------------------------------------------------------------------------
        dv = ("model", "version")
        self.drift_score = Gauge(
            "ferryman_drift_score",
            "Evidently drift score per feature (p-value for K-S/chi2/Z, distance otherwise).",
            ("model", "version", "feature"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_feature_drifted = Gauge(
            "ferryman_drift_feature_drifted",
            "1 when the feature drifted.",
            ("model", "version", "feature"),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_share = Gauge(
            "ferryman_drift_share",
            "Share of features that drifted (Evidently).",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_detected = Gauge(
            "ferryman_drift_detected",
            "1 when the drift share reaches the threshold.",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_threshold = Gauge(
            "ferryman_drift_share_threshold",
            "Drift share that counts as drifted.",
            ("model",),
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_window = Gauge(
            "ferryman_drift_window_rows",
            "Live rows in the drift window.",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_last_run = Gauge(
            "ferryman_drift_last_run_timestamp_seconds",
            "Time of the last drift run.",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.drift_runs = Counter(
            "ferryman_drift_runs", "Drift computations by result (ok, error).", (*dv, "result"), registry=reg
        )
        self.drift_run_duration = Histogram(
            "ferryman_drift_run_duration_seconds",
            "Wall time of one drift computation (off the request path).",
            ("model",),
            buckets=DRIFT_RUN_BUCKETS,
            registry=reg,
        )
        self.prediction_drift_score = Gauge(
            "ferryman_prediction_drift_score",
            "Evidently drift score of the predictions vs reference predictions.",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.prediction_drift_detected = Gauge(
            "ferryman_prediction_drift_detected",
            "1 when the prediction distribution drifted.",
            dv,
            multiprocess_mode="mostrecent",
            registry=reg,
        )

    # -- deferred request metrics ---------------------------------------------------------------------
    def attach(self, observer: metrics_flush.Flushable) -> None:
        """Publish ``observer``'s counts whenever this registry is collected (and, in multiprocess
        mode, every ``metrics_flush.FLUSH_INTERVAL_SECONDS`` from a daemon thread)."""
        with self._lock:
            self._observers.append(observer)
        if metrics_flush.multiprocess_dir() is not None:
            metrics_flush.start_periodic_flush()

    def flush(self) -> int:
        """Publish every attached observer's counts into the metrics (scrape, shutdown, tests)."""
        return sum(o.flush() for o in list(self._observers))

    # -- traffic and rollout (called by the gateway and the rollout driver) -------------------------
    def set_traffic_weights(
        self, model: str, weights: Mapping[str, float], *, shadow: Mapping[str, float] | None = None
    ) -> None:
        """Weights in percent (0..100) per version; versions that left the split drop to 0."""
        with self._lock:
            known = self._weighted.setdefault(model, set())
            for v in known - set(weights):
                self.traffic_weight.labels(model, v).set(0.0)
                self.shadow_ratio.labels(model, v).set(0.0)
            for v, w in weights.items():
                self.traffic_weight.labels(model, v).set(float(w) / 100.0)
                self.shadow_ratio.labels(model, v).set(float((shadow or {}).get(v, 0.0)) / 100.0)
            known.update(weights)

    def set_rollout_state(
        self, model: str, *, phase: str, step: int | None = None, steps: int | None = None
    ) -> None:
        """The current phase gets 1, every other known phase 0 (so the series exist from the start)."""
        p = normalize_phase(phase)
        with self._lock:
            seen = self._phases.setdefault(model, set(ROLLOUT_PHASES))
            seen.add(p)
            for other in seen:
                self.rollout_phase.labels(model, other).set(1.0 if other == p else 0.0)
            if step is not None:
                self.rollout_step.labels(model).set(step)
            if steps is not None:
                self.rollout_steps.labels(model).set(steps)

    def record_spec_reload(self, model: str, result: str) -> None:
        """One attempt to adopt an edited spec: "accepted" or "rejected"."""
        self.spec_reloads.labels(model, result).inc()
        self.spec_reload_rejected.labels(model).set(1.0 if result == "rejected" else 0.0)

    def init_analysis(self, model: str, version: str) -> None:
        """Create the outcome series at 0, so `increase()` sees the first decision of a new rollout."""
        for outcome in ANALYSIS_OUTCOMES:
            self.analysis.labels(model, version, outcome)

    def record_analysis(
        self,
        model: str,
        version: str,
        outcome: str,
        *,
        p99_seconds: float | None = None,
        error_ratio: float | None = None,
    ) -> None:
        self.init_analysis(model, version)
        self.analysis.labels(model, version, normalize_outcome(outcome)).inc()
        if p99_seconds is not None:
            self.analysis_p99.labels(model, version).set(p99_seconds)
        if error_ratio is not None:
            self.analysis_errors.labels(model, version).set(error_ratio)
        self.analysis_time.labels(model).set(time.time())

    def set_model_ready(self, model: str, version: str, ready: bool) -> None:
        self.model_ready.labels(model, version).set(1.0 if ready else 0.0)

    def set_budget(self, model: str, *, p99_seconds: float, max_error_ratio: float) -> None:
        self.budget_p99.labels(model).set(p99_seconds)
        self.budget_errors.labels(model).set(max_error_ratio)

    # -- drift (called by ferryman.drift) -----------------------------------------------------------
    def record_drift(
        self,
        model: str,
        version: str,
        *,
        scores: Mapping[str, float],
        drifted: Mapping[str, bool],
        share: float,
        detected: bool,
        window_rows: int,
        threshold: float,
        prediction_score: float | None = None,
        prediction_drifted: bool | None = None,
        run_seconds: float | None = None,
        at: float | None = None,
    ) -> None:
        for i, (feature, score) in enumerate(scores.items()):
            if i >= MAX_FEATURES:
                break
            self.drift_score.labels(model, version, feature).set(score)
            self.drift_feature_drifted.labels(model, version, feature).set(
                1.0 if drifted.get(feature) else 0.0
            )
        self.drift_share.labels(model, version).set(share)
        self.drift_detected.labels(model, version).set(1.0 if detected else 0.0)
        self.drift_threshold.labels(model).set(threshold)
        self.drift_window.labels(model, version).set(window_rows)
        self.drift_last_run.labels(model, version).set(at if at is not None else time.time())
        if prediction_score is not None:
            self.prediction_drift_score.labels(model, version).set(prediction_score)
            self.prediction_drift_detected.labels(model, version).set(1.0 if prediction_drifted else 0.0)
        self.drift_runs.labels(model, version, "ok").inc()
        if run_seconds is not None:
            self.drift_run_duration.labels(model).observe(run_seconds)

    def record_drift_error(self, model: str, version: str) -> None:
        self.drift_runs.labels(model, version, "error").inc()


# -- the process-wide default instance --------------------------------------------------------------
_default: FerrymanMetrics | None = None
_default_lock = threading.Lock()


def default() -> FerrymanMetrics:
    """The metrics on the default registry, created on first use (after any multiprocess setup)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = FerrymanMetrics()
    return _default


def default_created() -> bool:
    """Whether :func:`default` has created the process-wide metrics (multiprocess setup must come first)."""
    return _default is not None


def set_traffic_weights(
    model: str, weights: Mapping[str, float], *, shadow: Mapping[str, float] | None = None
) -> None:
    default().set_traffic_weights(model, weights, shadow=shadow)


def set_rollout_state(model: str, *, phase: str, step: int | None = None, steps: int | None = None) -> None:
    default().set_rollout_state(model, phase=phase, step=step, steps=steps)


def record_analysis(
    model: str,
    version: str,
    outcome: str,
    *,
    p99_seconds: float | None = None,
    error_ratio: float | None = None,
) -> None:
    default().record_analysis(model, version, outcome, p99_seconds=p99_seconds, error_ratio=error_ratio)


def set_model_ready(model: str, version: str, ready: bool) -> None:
    default().set_model_ready(model, version, ready)


def set_budget(model: str, *, p99_seconds: float, max_error_ratio: float) -> None:
    default().set_budget(model, p99_seconds=p99_seconds, max_error_ratio=max_error_ratio)
