"""Drift monitoring with Evidently: sampled live windows per version, computed off the request path.

    # or DriftMonitor(...)
    monitor = monitor_for_deployment(md, repository, metrics=ferryman.metrics.default())
    monitor.start()                                 # worker thread (+ drift process by default)
    observer = DriftObserver(monitor)               # RequestObserver: feeds the windows
    monitor.drift_share("v2") -> float | None       # for the rollout analysis (None: no run yet)
    monitor.report("v2") -> DriftReport             # per-feature scores, share, drifted, window, last run

Files: ``window.py`` (ring buffer), ``monitor.py`` (the monitor and its worker), ``engine.py`` (engine
interface + factory), ``evidently_stattests.py`` / ``evidently_preset.py`` (the engines),
``runners.py`` (thread or process isolation), ``reference.py`` (reference data, reference predictions),
``observer.py`` (request observer and ``GET /drift``), ``report.py`` (results).
"""

from ferryman.drift.monitor import DriftConfig, DriftMonitor
from ferryman.drift.observer import DriftObserver, drift_routes
from ferryman.drift.reference import add_model_version, load_reference, monitor_for_deployment
from ferryman.drift.report import DriftReport, DriftResult, FeatureDrift, PredictionDrift

__all__ = [
    "DriftConfig",
    "DriftMonitor",
    "DriftObserver",
    "DriftReport",
    "DriftResult",
    "FeatureDrift",
    "PredictionDrift",
    "add_model_version",
    "drift_routes",
    "load_reference",
    "monitor_for_deployment",
]
