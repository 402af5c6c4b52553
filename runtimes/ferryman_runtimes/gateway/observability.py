"""The gateway's observability plug-in (``up.build_platform`` imports it when present).

``attach(md, repo, extras, settle=hook)`` returns the request observers (Prometheus, drift sampling) and fills
``extras``: ``routes`` (``GET /metrics``, ``GET /drift``), ``drift`` (the monitor: drift results for the
rollout analysis, reset when a rollout starts), ``on_reload_result`` (counts accepted and rejected spec
edits), ``on_change`` (publishes weights, phase, step and analysis decisions on every rollout change),
``on_reload`` (call with the new spec after a reload: new versions get readiness and drift monitoring),
``closers`` (stop the drift worker)."""

from __future__ import annotations

import logging
from typing import Any

from ferryman.dataplane import ModelRepository
from ferryman.observability import DecisionTracker, instrument, publish_rollout
from ferryman.rollout import RolloutState
from ferryman.spec import ModelDeployment
from ferryman.telemetry import RequestObserver, Settle

log = logging.getLogger("ferryman.gateway")


def attach(
    md: ModelDeployment, repo: ModelRepository, extras: dict[str, Any], *, settle: Settle | None = None
) -> list[RequestObserver]:
    """``settle``: the hook of the deferred observer the gateway puts in front of the observers."""
    inst = instrument(md, repo, settle=settle)
    current = {"md": md}
    tracker = DecisionTracker()

    def on_change(state: RolloutState) -> None:
        try:
            publish_rollout(current["md"], state, tracker, registry_metrics=inst.metrics)
        except Exception:  # metrics must never break the rollout driver
            log.exception("publishing rollout metrics failed")

    def on_reload(new: ModelDeployment) -> None:
        current["md"] = new
        for version in repo.models.get(new.name, {}):
            inst.metrics.set_model_ready(new.name, version, repo.ready)
        monitor = inst.drift
        if monitor is None:
            return
        from ferryman.drift import add_model_version, load_reference
        from ferryman.store import fetch

        for v in new.spec.versions:
            if v.reference_data and v.name not in monitor and v.name in repo.models.get(new.name, {}):
                try:
                    reference, names = load_reference(fetch(v.reference_data))
                    add_model_version(monitor, repo.get(new.name, v.name), reference, feature_names=names)
                except Exception:
                    log.exception("drift monitoring for new version %s not started", v.name)

    extras.setdefault("routes", {}).update(inst.routes)
    extras["on_change"] = on_change
    extras["on_reload"] = on_reload
    extras["on_reload_result"] = lambda result: inst.metrics.record_spec_reload(current["md"].name, result)
    extras.setdefault("closers", []).append(inst.close)
    if inst.drift is not None:
        extras["drift"] = inst.drift
    return list(inst.observers)
