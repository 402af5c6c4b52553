"""The latency-budget gate: exact percentiles from per-request times, and the pass/fail verdict.

Pure functions, no I/O. Load generators round what they keep (Locust stores response times between
100 ms and 1 s rounded to 10 ms, so 104 ms is counted as 100 ms); the gate therefore works on the exact
per-request times and uses the nearest-rank definition: p99 is the smallest recorded time such that at
least 99 % of the requests took no longer. No interpolation, so a reported p99 is always a latency some
request actually had, and "p99 <= budget" means exactly "at least 99 % of the requests met the budget".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def nearest_rank(count: int, q: float) -> int:
    """1-based rank of the q-th percentile (0 < q <= 100) among ``count`` sorted values."""
    if count <= 0:
        raise ValueError("no values")
    if not 0.0 < q <= 100.0:
        raise ValueError(f"percentile {q} outside (0, 100]")
    # round() strips float noise such as 99.9 * 1000 / 100 = 999.0000000000001 before the ceiling.
    return max(1, math.ceil(round(q * count / 100.0, 9)))


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """Exact nearest-rank percentile of ``values`` (milliseconds or any unit)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    k = nearest_rank(arr.size, q) - 1
    return float(np.partition(arr, k)[k])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Exact latency figures of one run (milliseconds). ``requests`` counts failures too."""

    requests: int
    failures: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
        }


def summarize(times_ms: Sequence[float] | np.ndarray, *, failures: int = 0) -> LatencySummary:
    """Summarize every request's exact time (failed requests included: a timeout is slow, not absent)."""
    arr = np.sort(np.asarray(times_ms, dtype=np.float64).ravel())
    if failures < 0 or failures > arr.size:
        raise ValueError(f"failures={failures} must be between 0 and the {arr.size} requests")
    if arr.size == 0:
        nan = float("nan")
        return LatencySummary(
            requests=0, failures=0, p50_ms=nan, p90_ms=nan, p95_ms=nan, p99_ms=nan, max_ms=nan, mean_ms=nan
        )
    at = {q: float(arr[nearest_rank(arr.size, q) - 1]) for q in PERCENTILES}
    return LatencySummary(
        requests=int(arr.size),
        failures=failures,
        p50_ms=at[50.0],
        p90_ms=at[90.0],
        p95_ms=at[95.0],
        p99_ms=at[99.0],
        max_ms=float(arr[-1]),
        mean_ms=float(arr.mean()),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why it failed; empty when it passed


def evaluate(
    summary: LatencySummary, *, budget_ms: float, max_error_rate: float, min_requests: int = 1
) -> Verdict:
    """Fail when p99 exceeds the budget, the error rate exceeds its maximum, or too few requests ran."""
    reasons: list[str] = []
    if summary.requests < min_requests:
        reasons.append(f"only {summary.requests} request(s) completed (need at least {min_requests})")
    else:
        if summary.p99_ms > budget_ms:
            reasons.append(f"p99 {summary.p99_ms:.3f} ms exceeds the {budget_ms:g} ms budget")
        if summary.error_rate > max_error_rate:
            reasons.append(
                f"error rate {summary.error_rate:.2%} exceeds the maximum {max_error_rate:.2%} "
                f"({summary.failures} of {summary.requests} requests failed)"
            )
    return Verdict(passed=not reasons, reasons=tuple(reasons))
