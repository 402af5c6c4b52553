"""Wire metrics and drift monitoring into a server (the native runtime, the gateway, later Ray/KServe).

inst = instrument(md, repository)             # md is None for a bare .onnx file
InferenceApp(..., observer=inst.observer, extra_routes=inst.routes)
inst.drift                                    # the DriftMonitor, or None (drift off / no reference data)
inst.close()                                  # at shutdown: stops the drift worker and its process

publish_rollout(md, state, tracker)           # the rollout driver's on_change: weights, phase, decisions
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ferryman import metrics
from ferryman.metrics_exposition import routes as metrics_routes
from ferryman.request_metrics import PrometheusObserver
from ferryman.telemetry import CompositeObserver, RequestObserver, Settle, deferred

if TYPE_CHECKING:
    from ferryman.dataplane import ModelRepository
    from ferryman.drift import DriftConfig, DriftMonitor
    from ferryman.rollout import RolloutState
    from ferryman.spec import ModelDeployment

log = logging.getLogger("ferryman.observability")

ROLLOUT_ANALYSIS_ACTIONS = ("hold", "advance", "promote", "rollback")


@dataclass
class Instrumentation:
    observers: list[RequestObserver]
    routes: dict[tuple[str, str], Any]
    drift: DriftMonitor | None = None
    metrics: metrics.FerrymanMetrics = field(default_factory=metrics.default)
    settle: Settle = field(
        default_factory=Settle
    )  # the readers' hook, bound to the deferred observer's drain

    @cached_property
    def observer(self) -> RequestObserver:
        """All the observers, reported once per event-loop turn (see ``ferryman.telemetry``); built once."""
        inner = self.observers[0] if len(self.observers) == 1 else CompositeObserver(*self.observers)
        return deferred(inner, settle=self.settle)

    def close(self) -> None:
        """At shutdown: fold the pending request metrics (exact totals), stop the drift worker."""
        self.metrics.flush()
        if self.drift is not None:
            self.drift.stop()


def instrument(
    md: ModelDeployment | None,
    repository: ModelRepository,
    *,
    drift: bool = True,
    drift_config: DriftConfig | None = None,
    registry_metrics: metrics.FerrymanMetrics | None = None,
    settle: Settle | None = None,
) -> Instrumentation:
    """Prometheus observer + ``/metrics``; with a spec, budget/readiness gauges and the drift monitor.
    ``settle``: the hook of the deferred observer the caller puts in front (``inst.observer`` by default)."""
    m = registry_metrics or metrics.default()
    hook = settle if settle is not None else Settle()
    inst = Instrumentation(
        observers=[PrometheusObserver(m, settle=hook)], routes=dict(metrics_routes()), metrics=m, settle=hook
    )
    for name, versions in repository.models.items():
        for version in versions:
            m.set_model_ready(name, version, repository.ready)
    if md is None:
        return inst
    budget = md.spec.budget
    m.set_budget(md.name, p99_seconds=budget.p99_ms / 1000.0, max_error_ratio=budget.max_error_rate)
    if drift and md.spec.drift.enabled:
        from ferryman.drift import DriftObserver, drift_routes, monitor_for_deployment

        monitor = monitor_for_deployment(md, repository, metrics=m, config=drift_config)
        if monitor is not None:
            monitor.start()
            inst.drift = monitor
            inst.observers.append(DriftObserver(monitor))
            inst.routes.update(drift_routes(monitor))
    return inst


class DecisionTracker:
    """Counts each rollout decision once, even though on_change sees the whole (persisted) history."""

    def __init__(self) -> None:
        self.last_at: float | None = None


def publish_rollout(
    md: ModelDeployment,
    state: RolloutState,
    tracker: DecisionTracker,
    *,
    registry_metrics: metrics.FerrymanMetrics | None = None,
) -> None:
    """Mirror a rollout state into the gauges and count the controller's new analysis decisions."""
    from ferryman.rollout import table_for

    m = registry_metrics or metrics.default()
    table = table_for(md, state)
    shadow = {table.shadow: table.shadow_percent} if table.shadow else None
    m.set_traffic_weights(md.name, state.weights, shadow=shadow)
    steps = len(md.spec.traffic.canary.steps) if state.strategy.value == "canary" else 0
    m.set_rollout_state(md.name, phase=state.phase.value, step=state.step_index, steps=steps)
    if state.candidate:
        m.init_analysis(md.name, state.candidate)
    history = state.history
    if tracker.last_at is None:  # first call (start or resume): history before now is not news
        tracker.last_at = history[-1].at if history else 0.0
        fresh = []
    else:
        fresh = [d for d in history if d.at > tracker.last_at]
        if history:
            tracker.last_at = max(tracker.last_at, history[-1].at)
    analysis = state.last_analysis
    for decision in fresh:
        action = decision.action.value
        if action not in ROLLOUT_ANALYSIS_ACTIONS or decision.actor != "controller":
            continue
        version = analysis.version if analysis is not None else (state.candidate or state.stable)
        p99 = err = None
        if analysis is not None:
            for check in analysis.checks:
                if check.name == "p99_latency_ms" and check.value is not None:
                    p99 = check.value / 1000.0
                elif check.name == "error_rate":
                    err = check.value
        m.record_analysis(md.name, version, action, p99_seconds=p99, error_ratio=err)
