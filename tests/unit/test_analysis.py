"""Analysis of a candidate's window against the budget: p99, error rate, drift veto; missing data never
passes."""

from __future__ import annotations

import json

import pytest

from ferryman.analysis import Analysis, Outcome, VersionStats, analyze, wilson_interval
from ferryman.spec import Budget

BUDGET = Budget(p99_ms=100, max_error_rate=0.01)


def judge(
    requests: int = 200,
    errors: int = 0,
    p99_ms: float | None = 40.0,
    *,
    drift: float | None = None,
    drift_threshold: float | None = None,
    min_requests: int = 50,
    note: str = "",
) -> Analysis:
    stats = VersionStats(
        "v2", requests, errors, None if p99_ms is None else p99_ms / 1000, drift_share=drift, note=note
    )
    return analyze(stats, budget=BUDGET, min_requests=min_requests, drift_threshold=drift_threshold)


def test_within_budget_passes_with_every_check_listed() -> None:
    a = judge()
    assert a.outcome == Outcome.passed and a.requests == 200 and a.version == "v2"
    assert [(c.name, c.ok) for c in a.checks] == [("p99_latency_ms", True), ("error_rate", True)]
    assert a.reason == "within budget: p99_latency_ms 40.0 <= 100.0, error_rate 0.0 <= 0.01"


def test_exactly_on_the_budget_passes() -> None:
    assert judge(p99_ms=100.0, errors=2).outcome == Outcome.passed  # 2/200 = 1 % error rate, 100 ms p99


def test_slow_p99_fails_and_the_reason_names_it() -> None:
    a = judge(p99_ms=150.5)
    assert a.outcome == Outcome.failed
    assert a.reason == "p99_latency_ms 150.5 exceeds 100.0"
    p99 = a.checks[0]
    assert (p99.name, p99.value, p99.threshold, p99.ok) == ("p99_latency_ms", 150.5, 100.0, False)


def test_error_rate_fails_and_both_reasons_are_given() -> None:
    assert judge(errors=3).reason == "error_rate 0.015 exceeds 0.01"
    both = judge(errors=3, p99_ms=101)
    assert both.outcome == Outcome.failed
    assert (
        "p99_latency_ms 101.0 exceeds 100.0" in both.reason and "error_rate 0.015 exceeds 0.01" in both.reason
    )


def test_drift_vetoes_an_otherwise_healthy_candidate() -> None:
    vetoed = judge(drift=0.6, drift_threshold=0.5)
    assert vetoed.outcome == Outcome.failed and vetoed.reason == "drift_share 0.6 exceeds 0.5"
    assert (
        judge(drift=0.5, drift_threshold=0.5).outcome == Outcome.failed
    )  # at the threshold counts as drifted
    ok = judge(drift=0.2, drift_threshold=0.5)
    assert ok.outcome == Outcome.passed and "drift_share 0.2 <= 0.5" in ok.reason
    assert [c.name for c in judge(drift=0.9).checks] == ["p99_latency_ms", "error_rate"]  # monitoring off
    assert [c.name for c in judge(drift_threshold=0.5).checks] == [
        "p99_latency_ms",
        "error_rate",
    ]  # no data yet


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"requests": 49}, "only 49 of 50 requests needed for a decision"),
        ({"requests": 0, "min_requests": 0}, "only 0 of 1 requests needed for a decision"),
        ({"p99_ms": None}, "p99 latency unknown"),
        ({"requests": 0, "note": "prometheus unreachable"}, "no data: prometheus unreachable"),
    ],
)
def test_missing_data_is_insufficient_never_a_pass(kwargs: dict[str, object], reason: str) -> None:
    a = judge(**kwargs)  # type: ignore[arg-type]
    assert a.outcome == Outcome.insufficient and a.reason == reason and a.checks == ()


def test_insufficient_even_when_the_few_requests_all_failed() -> None:
    assert judge(requests=10, errors=10, p99_ms=900).outcome == Outcome.insufficient


def test_analysis_round_trips_through_json() -> None:
    for a in (judge(), judge(p99_ms=300, errors=9, drift=0.7, drift_threshold=0.5), judge(requests=1)):
        assert Analysis.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_error_rate_of_an_empty_window_is_zero() -> None:
    assert VersionStats("v", 0, 0, None).error_rate == 0.0
    assert VersionStats("v", 8, 2, 0.1).error_rate == 0.25


# -- Wilson interval ------------------------------------------------------------------------------------
def test_wilson_interval_known_values() -> None:
    # z = 1.96: for k = 0 the upper bound is z²/(n + z²) = 3.8416 / 13.8416
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-5)
    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(1, 3), (7, 40), (180, 200), (999, 1000)])
def test_wilson_interval_contains_the_estimate_and_is_symmetric(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo2, hi2 = wilson_interval(n - k, n)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2))


def test_wilson_interval_narrows_with_more_trials() -> None:
    widths = [hi - lo for lo, hi in (wilson_interval(8 * m, 10 * m) for m in (1, 10, 100, 1000))]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] == pytest.approx(2 * 1.96 * (0.8 * 0.2 / 10_000) ** 0.5, rel=1e-3)  # the normal limit
