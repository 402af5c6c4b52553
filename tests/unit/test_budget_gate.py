"""The latency-budget gate (ferryman.budget) and the pure pieces of the load-test tooling around it.

Exact p99 math, including latencies just above 100 ms that Locust's statistics round down to 100 ms;
duration parsing, load shapes, the knee search, exact-time aggregation, wrk result parsing and the
benchmark's ratio arithmetic.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import budget
from ferryman.cli import loadtest
from loadtests import knee, payloads, shapes, wrk
from loadtests.bench import report
from loadtests.bench.harness import best_of

# -- exact percentiles ----------------------------------------------------------------------------------


def test_nearest_rank_percentiles_of_1_to_100() -> None:
    values = np.arange(1, 101, dtype=float)[::-1]  # unsorted on purpose
    assert budget.percentile(values, 50) == 50.0
    assert budget.percentile(values, 99) == 99.0
    assert budget.percentile(values, 100) == 100.0
    assert budget.percentile(values, 1) == 1.0


def test_p99_of_few_values_is_the_maximum() -> None:
    # With 10 requests, 99 % of them means all 10: one slow request decides p99.
    assert budget.percentile([1, 1, 1, 1, 1, 1, 1, 1, 1, 250.0], 99) == 250.0


def test_nearest_rank_survives_float_noise() -> None:
    # 99.9 * 1000 / 100 is 999.0000000000001 in floating point; the rank is still 999.
    assert budget.nearest_rank(1000, 99.9) == 999
    assert budget.nearest_rank(1000, 99) == 990
    assert budget.nearest_rank(1, 99) == 1
    with pytest.raises(ValueError):
        budget.nearest_rank(0, 99)
    with pytest.raises(ValueError):
        budget.nearest_rank(10, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=5000.0, allow_nan=False), min_size=1, max_size=400),
    st.sampled_from([50.0, 90.0, 95.0, 99.0, 99.9]),
)
def test_percentile_matches_its_definition(values: list[float], q: float) -> None:
    """p is a recorded value; at least q % of values are <= p; fewer than q % are < p."""
    p = budget.percentile(values, q)
    n = len(values)
    assert p in values
    assert sum(v <= p for v in values) >= q * n / 100 - 1e-9
    assert sum(v < p for v in values) < q * n / 100 + 1e-9


# -- the gate near 100 ms -----------------------------------------------------------------------------------


def _slow_tail(n_fast: int, fast_ms: float, n_slow: int, slow_ms: float) -> np.ndarray:
    return np.concatenate([np.full(n_fast, fast_ms), np.full(n_slow, slow_ms)])


def test_gate_fails_just_above_the_budget() -> None:
    # 2 % of requests at 100.4 ms: the exact p99 is 100.4 ms, over a 100 ms budget.
    times = _slow_tail(980, 5.0, 20, 100.4)
    summary = budget.summarize(times)
    assert summary.p99_ms == pytest.approx(100.4)
    verdict = budget.evaluate(summary, budget_ms=100, max_error_rate=0.01)
    assert not verdict.passed
    assert "p99 100.400 ms exceeds the 100 ms budget" in verdict.reasons[0]


def test_gate_passes_at_and_just_below_the_budget() -> None:
    for slow in (100.0, 99.99):
        summary = budget.summarize(_slow_tail(980, 5.0, 20, slow))
        assert budget.evaluate(summary, budget_ms=100, max_error_rate=0.01).passed, slow


def test_gate_ignores_a_slow_tail_under_one_percent() -> None:
    # 10 of 1000 requests at 104 ms is exactly 1 %: p99 is the 990th value, a fast one.
    summary = budget.summarize(_slow_tail(990, 5.0, 10, 104.0))
    assert summary.p99_ms == 5.0
    # one more slow request and p99 is the slow one
    assert budget.summarize(_slow_tail(989, 5.0, 11, 104.0)).p99_ms == 104.0


def test_locust_statistics_would_pass_what_the_exact_gate_fails() -> None:
    """The reason the gate uses exact times: Locust's own p99 of these requests is 100 ms."""
    times = _slow_tail(980, 5.0, 20, 104.0)
    code = (
        "import json, sys\n"
        "from collections import Counter\n"
        "from locust.stats import bucket_response_time, calculate_response_time_percentile\n"
        "times = json.loads(sys.stdin.read())\n"
        "buckets = Counter(bucket_response_time(t) for t in times)\n"
        "print(calculate_response_time_percentile(buckets, len(times), 0.99))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(times.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    locust_p99 = float(out.stdout.strip())
    assert locust_p99 <= 100.0  # Locust: within budget
    exact = budget.summarize(times)
    assert exact.p99_ms == 104.0
    assert not budget.evaluate(exact, budget_ms=100, max_error_rate=0.01).passed  # exact: over budget


def test_error_rate_gate_and_its_reason() -> None:
    times = np.full(200, 3.0)
    ok = budget.summarize(times, failures=2)
    assert ok.error_rate == 0.01
    assert budget.evaluate(ok, budget_ms=100, max_error_rate=0.01).passed
    bad = budget.summarize(times, failures=3)
    verdict = budget.evaluate(bad, budget_ms=100, max_error_rate=0.01)
    assert not verdict.passed
    assert "error rate 1.50% exceeds the maximum 1.00% (3 of 200 requests failed)" in verdict.reasons[0]


def test_both_limits_broken_gives_both_reasons() -> None:
    summary = budget.summarize(np.full(100, 250.0), failures=50)
    verdict = budget.evaluate(summary, budget_ms=100, max_error_rate=0.01)
    assert len(verdict.reasons) == 2


def test_no_requests_fails_the_gate() -> None:
    summary = budget.summarize([])
    assert summary.requests == 0
    assert math.isnan(summary.p99_ms)
    verdict = budget.evaluate(summary, budget_ms=100, max_error_rate=0.01)
    assert not verdict.passed
    assert "only 0 request(s)" in verdict.reasons[0]


def test_summary_figures() -> None:
    times = np.arange(1, 1001, dtype=float)
    s = budget.summarize(times, failures=0)
    assert (s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.max_ms) == (500.0, 900.0, 950.0, 990.0, 1000.0)
    assert s.mean_ms == pytest.approx(500.5)
    with pytest.raises(ValueError):
        budget.summarize(times, failures=1001)


# -- exact times written by Locust processes -------------------------------------------------------------


def test_exact_times_from_every_process_are_aggregated(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "exact-a-1.npz",
        times_ms=np.array([1.0, 2.0, np.nan]),
        failed=np.array([False, False, True]),
    )
    np.savez(tmp_path / "exact-b-2.npz", times_ms=np.array([104.0]), failed=np.array([True]))
    np.savez(tmp_path / "exact-master-3.npz", times_ms=np.empty(0), failed=np.empty(0, dtype=bool))
    (tmp_path / "unrelated.npz").write_bytes(b"")
    times, failures = loadtest.load_exact_times(tmp_path)
    assert sorted(times.tolist()) == [
        1.0,
        2.0,
        104.0,
        math.inf,
    ]  # a request without a time is infinitely slow
    assert failures == 2


# -- durations, shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert loadtest.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "10x", "s30", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(loadtest.LoadTestError):
        loadtest.parse_duration(text)


def test_steady_shape_holds_then_stops() -> None:
    assert shapes.users_at("steady", 0, users=10, spawn_rate=2, run_time_s=30) == (10, 2)
    assert shapes.users_at("steady", 29.9, users=10, spawn_rate=2, run_time_s=30) == (10, 2)
    assert shapes.users_at("steady", 30, users=10, spawn_rate=2, run_time_s=30) is None


def test_ramp_shape_climbs_in_steps_to_the_full_count() -> None:
    counts = [
        shapes.users_at("ramp", t, users=50, spawn_rate=5, run_time_s=100)[0]  # type: ignore[index]
        for t in range(0, 100, 5)
    ]
    assert counts[0] == 5
    assert counts[-1] == 50
    assert counts == sorted(counts)
    assert len(set(counts)) == shapes.RAMP_STEPS


def test_spike_shape_spikes_in_the_middle_fifth() -> None:
    def users(t: float) -> int:
        got = shapes.users_at("spike", t, users=50, spawn_rate=5, run_time_s=100)
        assert got is not None
        return got[0]

    assert [users(t) for t in (0, 39, 40, 59, 60, 99)] == [10, 10, 50, 50, 10, 10]
    with pytest.raises(ValueError):
        shapes.users_at("zigzag", 1, users=1, spawn_rate=1, run_time_s=10)


# -- the knee search -------------------------------------------------------------------------------------


def _step(c: int, rps: float, p99: float, err: float = 0.0) -> knee.Step:
    return knee.Step(connections=c, rps=rps, p99_ms=p99, error_rate=err, requests=1000)


def test_knee_is_the_fastest_step_within_budget_and_errors() -> None:
    steps = [_step(1, 100, 2), _step(2, 190, 3), _step(4, 300, 150), _step(8, 320, 20, err=0.05)]
    best = knee.knee(steps, budget_ms=100, max_error_rate=0.01)
    assert best == steps[1]
    assert knee.knee([_step(1, 100, 120)], budget_ms=100, max_error_rate=0.01) is None


def test_knee_search_doubles_until_the_budget_breaks() -> None:
    # A server that saturates at 1000 req/s and queues beyond: p99 = connections / rate.
    def measure(c: int) -> knee.Step:
        rate = min(1000.0, 200.0 * c)
        return _step(c, rate, 1000.0 * c / rate)

    steps, best = knee.find(measure, budget_ms=20, max_error_rate=0.01, max_connections=4096)
    assert [s.connections for s in steps][:4] == [1, 2, 4, 8]
    assert best is not None and best.rps == 1000.0 and best.p99_ms <= 20


def test_knee_search_stops_on_a_plateau_and_at_the_cap() -> None:
    flat = [_step(1, 500, 1), _step(2, 505, 2), _step(4, 506, 4)]
    assert knee.next_connections(flat, budget_ms=100, max_error_rate=0.01, max_connections=1024) is None
    growing = [_step(1, 100, 1), _step(2, 200, 1)]
    assert knee.next_connections(growing, budget_ms=100, max_error_rate=0.01, max_connections=1024) == 4
    assert knee.next_connections(growing, budget_ms=100, max_error_rate=0.01, max_connections=2) is None
    broken = [*growing, _step(4, 300, 101)]
    assert knee.next_connections(broken, budget_ms=100, max_error_rate=0.01, max_connections=1024) is None


# -- wrk glue ---------------------------------------------------------------------------------------------


def test_wrk_output_is_parsed_from_the_json_line() -> None:
    out = (
        "Running 1s test @ http://127.0.0.1:1/x\n  1 threads and 16 connections\n"
        'FERRYMAN_WRK {"requests":2000,"duration_us":2000000,"bytes":1,"connect_errors":1,"read_errors":2,'
        '"write_errors":0,"status_errors":5,"timeouts":3,"p50_us":1500,"p90_us":2500,"p99_us":100400,'
        '"max_us":200000,"mean_us":1800.5}\n'
    )
    r = wrk.parse_output(out, connections=16)
    assert r.rps == 1000.0
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (1.5, 100.4, 200.0)
    assert r.non_2xx == 5 and r.socket_errors == 6
    assert r.error_rate == pytest.approx(11 / 2006)
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("nothing here", connections=1)


def test_wrk_script_reads_the_body_file_and_sets_headers(tmp_path: Path) -> None:
    p = payloads.build(np.ones((2, 30), dtype=np.float32), protocol="v2-binary")
    script = wrk.lua_script(p, tmp_path / "body.bin")
    assert json.dumps(str(tmp_path / "body.bin")) in script
    assert 'wrk.method = "POST"' in script
    assert (
        f'wrk.headers["Inference-Header-Content-Length"] = "{p.headers["Inference-Header-Content-Length"]}"'
        in script
    )
    assert "done = function(summary, latency, requests)" in script


# -- benchmark ratios -------------------------------------------------------------------------------------


def _entry(
    name: str, rps: float, p99: float = 1.0, status: str = "ok", rows_per_s: float | None = None
) -> dict:
    return {
        "name": name,
        "status": status,
        "result": {"rps": rps, "p99_ms": p99} if status == "ok" else None,
        "batch": {"rows_per_s": rows_per_s} if rows_per_s else None,
    }


def test_ratios_targets_and_missing_contenders() -> None:
    entries = [
        _entry("minimal-asgi", 10_000),
        _entry("kserve-stock", 900),
        _entry("ray-stock", 0, status="n/a"),
        _entry("ferryman-gateway", 8_000, p99=6.0, rows_per_s=400_000),
        _entry("ferryman-gateway-plain", 8_500),
        _entry("raw-ort", 80_000, rows_per_s=1_000_000),
    ]
    rows = {r["name"]: r for r in report.compute(entries)}
    assert rows["gateway vs minimal ASGI"]["value"] == pytest.approx(0.8)
    assert rows["gateway vs minimal ASGI"]["met"] is True
    assert rows["gateway vs stock KServe"]["value"] == pytest.approx(8000 / 900)
    assert rows["gateway vs stock KServe"]["met"] is False
    assert rows["gateway vs plain Ray Serve"]["value"] is None
    assert rows["gateway vs plain Ray Serve"]["note"] == "ray-stock: n/a"
    assert rows["gateway p99 at 16 connections"]["value"] == 6.0
    assert rows["gateway p99 at 16 connections"]["met"] is False
    assert rows["drift + metrics cost (gateway on vs off)"]["value"] == pytest.approx(1 - 8000 / 8500)
    assert rows["drift + metrics cost (gateway on vs off)"]["met"] is True
    assert rows["gateway 256-row batches vs raw ORT (rows/s)"]["value"] == pytest.approx(0.4)
    assert "native vs minimal ASGI" not in rows  # ferryman-native was not part of this run
    assert report.format_value(rows["gateway vs minimal ASGI"]) == "0.80x"
    assert report.format_target(rows["drift + metrics cost (gateway on vs off)"]) == "≤ 10%"
    # a missed ratio target that the minimal ASGI app misses too says so; one the floor meets says nothing
    assert rows["gateway vs stock KServe"]["note"] is None  # the floor is 11.1x KServe here: nothing to add
    slow_floor = [
        _entry("minimal-asgi", 6_000),
        _entry("kserve-stock", 1_000),
        _entry("ferryman-gateway", 5_000),
    ]
    rows = {r["name"]: r for r in report.compute(slow_floor)}
    assert rows["gateway vs stock KServe"]["note"] == "the minimal ASGI app itself is 6.00x here"
    assert rows["gateway vs minimal ASGI"]["met"] is True and rows["gateway vs minimal ASGI"]["note"] is None
    fast_floor = [
        _entry("minimal-asgi", 16_000),
        _entry("kserve-stock", 1_000),
        _entry("ferryman-gateway", 5_000),
    ]
    rows = {r["name"]: r for r in report.compute(fast_floor)}
    assert rows["gateway vs stock KServe"]["met"] is False and rows["gateway vs stock KServe"]["note"] is None


def test_best_round_counts_and_failures_win() -> None:
    def ok(rps: float, rows_per_s: float | None = None) -> dict:
        return {
            "name": "x",
            "status": "ok",
            "result": {"rps": rps},
            "batch": {"rows_per_s": rows_per_s} if rows_per_s else None,
        }

    merged = best_of([ok(900, rows_per_s=50_000), ok(1000, rows_per_s=40_000), ok(950)])
    assert merged["result"]["rps"] == 1000
    assert merged["batch"]["rows_per_s"] == 50_000  # the best batch round, wherever it was
    assert merged["rounds_rps"] == [900, 1000, 950]
    failed = {"name": "x", "status": "failed", "error": "boom", "result": None, "batch": None}
    merged = best_of([ok(1000), failed])
    assert merged["status"] == "failed" and merged["error"] == "boom"
    assert merged["rounds_rps"] == [1000]
