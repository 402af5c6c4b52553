"""Analysis of a version's behaviour over a window: p99 latency vs budget, error rate, drift share. Pure.

Metric sources (the in-process gateway's exact accounting, or Prometheus on Kubernetes) produce a
:class:`VersionStats`; :func:`analyze` turns it into an :class:`Analysis` with an outcome and a reason.
Missing data never passes: too few requests, or an unknown p99, is ``insufficient`` (the rollout holds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ferryman.spec import Budget


class Outcome(StrEnum):
    passed = "pass"
    failed = "fail"
    insufficient = "insufficient"


@dataclass(frozen=True, slots=True)
class VersionStats:
    version: str
    requests: int
    errors: int
    p99_seconds: float | None
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    drift_share: float | None = None
    drift_pending: bool = False  # drift is monitored for this version but not measured yet
    drift_measured_at: float | None = None  # wall-clock time of the run that measured drift_share
    source: str = "gateway"
    note: str = ""  # why data is missing, when it is

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: float | None
    threshold: float
    ok: bool


@dataclass(frozen=True, slots=True)
class Analysis:
    version: str
    outcome: Outcome
    reason: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["checks"] = [asdict(c) for c in self.checks]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        return cls(
            version=d["version"],
            outcome=Outcome(d["outcome"]),
            reason=d["reason"],
            checks=tuple(Check(**c) for c in d.get("checks", [])),
            requests=d.get("requests", 0),
        )


def analyze(
    stats: VersionStats, *, budget: Budget, min_requests: int, drift_threshold: float | None = None
) -> Analysis:
    if stats.note and stats.requests == 0:
        return Analysis(stats.version, Outcome.insufficient, f"no data: {stats.note}", requests=0)
    if stats.requests < max(min_requests, 1):
        return Analysis(
            stats.version,
            Outcome.insufficient,
            f"only {stats.requests} of {max(min_requests, 1)} requests needed for a decision",
            requests=stats.requests,
        )
    checks = []
    budget_s = budget.p99_ms / 1000.0
    if stats.p99_seconds is None:
        return Analysis(stats.version, Outcome.insufficient, "p99 latency unknown", requests=stats.requests)
    checks.append(
        Check(
            "p99_latency_ms", round(stats.p99_seconds * 1000, 3), budget.p99_ms, stats.p99_seconds <= budget_s
        )
    )
    checks.append(
        Check(
            "error_rate",
            round(stats.error_rate, 6),
            budget.max_error_rate,
            stats.error_rate <= budget.max_error_rate,
        )
    )
    if drift_threshold is not None and stats.drift_pending and stats.drift_share is None:
        return Analysis(
            stats.version,
            Outcome.insufficient,
            "waiting for the first drift measurement",
            tuple(checks),
            stats.requests,
        )
    if drift_threshold is not None and stats.drift_share is not None:
        checks.append(
            Check(
                "drift_share",
                round(stats.drift_share, 4),
                drift_threshold,
                stats.drift_share < drift_threshold,
            )
        )
    failed = [c for c in checks if not c.ok]
    if failed:
        reason = "; ".join(f"{c.name} {c.value} exceeds {c.threshold}" for c in failed)
        return Analysis(stats.version, Outcome.failed, reason, tuple(checks), stats.requests)
    summary = ", ".join(f"{c.name} {c.value} <= {c.threshold}" for c in checks)
    return Analysis(stats.version, Outcome.passed, f"within budget: {summary}", tuple(checks), stats.requests)


def wilson_interval(successes: int, trials: int, *, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion (used for per-arm A/B accuracy)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * ((p * (1 - p) / trials + z * z / (4 * trials * trials)) ** 0.5) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
