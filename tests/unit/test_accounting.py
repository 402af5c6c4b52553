"""Exact per-(version, route) accounting: windows from a mark, nearest-rank p99 from real values, errors."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from ferryman import accounting as accounting_module
from ferryman.accounting import Accounting
from ferryman.telemetry import RequestRecord


class Clock:
    """A monotonic clock the test advances by hand, so windows split exactly where the test says."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def record(version: str, seconds: float, *, route: str = "candidate", code: int = 200) -> RequestRecord:
    return RequestRecord(model="m", version=version, route=route, protocol="v2", code=code, seconds=seconds)


def feed(acc: Accounting, version: str, latencies: list[float], **kwargs: object) -> None:
    for s in latencies:
        acc.finished(record(version, s, **kwargs), None, None)  # type: ignore[arg-type]


def test_exact_nearest_rank_percentiles() -> None:
    acc = Accounting()
    values = [ms / 1000 for ms in range(1, 1001)]  # 1 ms .. 1000 ms
    random.Random(3).shuffle(values)
    feed(acc, "v2", values)
    s = acc.window("v2", since=0.0)
    assert s.requests == 1000 and s.errors == 0
    # the smallest latency that 50 / 95 / 99 % of requests did not exceed: observed values, no interpolation
    assert (s.p50_seconds, s.p95_seconds, s.p99_seconds) == (0.5, 0.95, 0.99)


def test_one_slow_request_in_a_hundred_is_not_the_p99_but_two_are() -> None:
    acc = Accounting()
    feed(acc, "v2", [0.01] * 99 + [2.0])
    assert acc.window("v2", since=0.0).p99_seconds == 0.01
    feed(acc, "v2", [2.0])  # 2 of 101 above 10 ms: more than 1 %
    assert acc.window("v2", since=0.0).p99_seconds == 2.0


def test_windows_start_at_a_mark_and_totals_keep_everything() -> None:
    clock = Clock()
    acc = Accounting(clock=clock)
    feed(acc, "v2", [0.5] * 10)
    clock.t += 1
    mark = acc.now()
    feed(acc, "v2", [0.01] * 30)
    clock.t += 1
    feed(acc, "v2", [0.02] * 20)
    recent = acc.window("v2", since=mark)
    assert (recent.requests, recent.p99_seconds) == (50, 0.02)
    assert acc.window("v2", since=clock.t).requests == 20  # "at or after" the mark
    assert acc.window("v2", since=clock.t + 1).requests == 0
    everything = acc.window("v2", since=0.0)
    assert (everything.requests, everything.p99_seconds) == (60, 0.5)
    [total] = acc.totals()
    assert (total.version, total.route, total.requests) == ("v2", "candidate", 60)


def test_an_empty_window_has_no_percentiles() -> None:
    s = Accounting().window("v9", since=0.0)
    assert (s.requests, s.errors, s.p99_seconds) == (0, 0, None)


def test_server_errors_count_client_errors_do_not() -> None:
    acc = Accounting()
    feed(acc, "v2", [0.01] * 7)
    feed(acc, "v2", [0.2] * 3, code=500)
    feed(acc, "v2", [0.001] * 5, code=400)  # the caller's mistake, not the version's
    feed(acc, "v2", [0.001] * 2, code=404)
    acc.finished(record("", 0.001, code=503), None, None)  # failed before a version was chosen
    s = acc.window("v2", since=0.0)
    assert (s.requests, s.errors, s.error_rate) == (10, 3, 0.3)
    assert s.p99_seconds == 0.2  # failed requests' latencies are part of the tail
    assert [t.version for t in acc.totals()] == ["v2"]


def test_routes_are_separate_rows_and_the_window_spans_them() -> None:
    acc = Accounting()
    feed(acc, "v2", [0.01] * 5, route="candidate")
    feed(acc, "v2", [0.02] * 3, route="pinned")
    feed(acc, "v2", [0.03] * 2, route="shadow", code=500)
    feed(acc, "v1", [0.001] * 4, route="stable")
    rows = {(t.version, t.route): (t.requests, t.errors) for t in acc.totals()}
    assert rows == {
        ("v1", "stable"): (4, 0),
        ("v2", "candidate"): (5, 0),
        ("v2", "pinned"): (3, 0),
        ("v2", "shadow"): (2, 2),
    }
    assert [(t.version, t.route) for t in acc.totals()] == sorted(rows)
    assert acc.window("v2", since=0.0).requests == 10
    only = acc.window("v2", since=0.0, routes={"candidate", "pinned"})
    assert (only.requests, only.errors, only.p99_seconds) == (8, 0, 0.02)


def test_concurrent_writers_lose_nothing() -> None:
    acc = Accounting()

    def write(n: int) -> None:
        feed(acc, "v2", [0.001 * (n + 1)] * 5_000, route=f"r{n % 2}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert acc.window("v2", since=0.0).requests == 20_000
    assert sum(t.requests for t in acc.totals()) == 20_000


def test_memory_is_bounded_and_the_count_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting_module, "MAX_SAMPLES", 100)
    acc = Accounting()
    feed(acc, "v2", list(np.linspace(0.001, 0.101, 101)))
    feed(acc, "v2", [0.5] * 10)
    [total] = acc.totals()
    assert total.requests == 111  # every request counted...
    recent = acc.window("v2", since=0.0)
    assert recent.requests < 111 and recent.p99_seconds == 0.5  # ...the oldest samples dropped, the tail kept


def test_reading_windows_while_requests_finish_on_other_threads() -> None:
    acc = Accounting()
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            feed(acc, "v2", [0.001] * 30_000)
        except BaseException as err:  # surfaced below
            errors.append(err)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set() and reads < 100_000:
        acc.window("v2", since=0.0)  # a window holds no view of the series once it returns
        reads += 1
    writer.join()
    assert errors == []
    assert acc.window("v2", since=0.0).requests == 30_000
