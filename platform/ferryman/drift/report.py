"""What a drift run produces: per-feature results, the dataset drift share, prediction drift."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    name: str
    score: float  # Evidently's drift score: a p-value for K-S/chi-square/Z, a distance otherwise
    drifted: bool
    method: str
    threshold: float


@dataclass(frozen=True, slots=True)
class PredictionDrift:
    kind: str  # "class" (predicted labels) or "value" (regression output)
    score: float
    drifted: bool
    method: str
    threshold: float


@dataclass(frozen=True, slots=True)
class DriftResult:
    """An engine's answer for one window."""

    features: tuple[FeatureDrift, ...]
    share: float
    prediction: PredictionDrift | None = None
    seconds: float = 0.0  # compute time of the engine alone


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The monitor's latest view of one version (what ``DriftMonitor.report`` returns)."""

    model: str
    version: str
    share: float | None
    drifted: bool | None
    threshold: float
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift | None
    window_rows: int
    reference_rows: int
    rows_seen: int
    last_run: float | None  # unix time of the last completed run
    run_seconds: float | None  # the engine's compute time for the last run
    engine: str
    error: str | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drifted_features"] = self.drifted_features
        return _finite(d)


def _finite(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
