"""The deferred observer: a loop turn's requests reported together after the turn, readers settle first,
nothing lost or reported twice when a reader on another thread drains while the loop keeps finishing."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ferryman.accounting import Accounting
from ferryman.metrics import FerrymanMetrics
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.request_metrics import PrometheusObserver
from ferryman.telemetry import (
    CompositeObserver,
    DeferredObserver,
    Finished,
    NullObserver,
    RequestObserver,
    RequestRecord,
    Settle,
    deferred,
)


def record(i: int = 0, *, version: str = "v1", code: int = 200, model: str = "m") -> RequestRecord:
    return RequestRecord(
        model=model,
        version=version,
        route="stable",
        protocol="v2",
        code=code,
        seconds=0.001 * (i + 1),
        compute_seconds=0.0005,
        rows=1,
    )


class Log(RequestObserver):
    """Records every call, and which thread made it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # ("one" | "many", number of requests)
        self.seconds: list[float] = []
        self.threads: set[int] = set()
        self.started_models: list[str] = []

    def started(self, model: str) -> None:
        self.started_models.append(model)

    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        self.calls.append(("one", 1))
        self.seconds.append(record.seconds)
        self.threads.add(threading.get_ident())


class BatchLog(Log):
    def finished_many(self, batch: Sequence[Finished]) -> None:
        self.calls.append(("many", len(batch)))
        self.seconds.extend(r.seconds for r, _, _ in batch)
        self.threads.add(threading.get_ident())


class Broken(RequestObserver):
    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        raise RuntimeError("observer bug")


def test_without_a_running_loop_each_request_is_reported_at_once() -> None:
    inner = BatchLog()
    observer = DeferredObserver(inner)
    observer.finished(record(0), None, None)
    assert inner.calls == [("many", 1)]
    observer.started("m")
    assert inner.started_models == ["m"]  # started is never deferred (the in-flight gauge)


def test_a_turns_requests_are_reported_together_after_the_turn_in_order() -> None:
    inner = BatchLog()
    observer = DeferredObserver(inner)

    async def main() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        for i in range(5):
            observer.finished(record(i), None, None)
        during = list(inner.calls)
        await asyncio.sleep(0)  # the turn ends
        return during, list(inner.calls)

    during, after = asyncio.run(main())
    assert during == []
    assert after == [("many", 5)]
    assert inner.seconds == [0.001 * (i + 1) for i in range(5)]


def test_an_observer_without_finished_many_gets_each_request() -> None:
    inner = Log()
    inner.finished_many([(record(i), None, None) for i in range(3)])
    assert inner.calls == [("one", 1)] * 3


def test_ignores_started_says_whether_a_class_overrides_started() -> None:
    assert not Log.ignores_started and not BatchLog.ignores_started
    assert Broken.ignores_started and Accounting.ignores_started and NullObserver.ignores_started
    assert not PrometheusObserver.ignores_started  # the in-flight count
    assert CompositeObserver(Broken(), Accounting()).ignores_started
    assert not CompositeObserver(Broken(), Log()).ignores_started
    assert DeferredObserver(Broken()).ignores_started and not DeferredObserver(Log()).ignores_started


def test_only_request_observers_are_accepted() -> None:
    class Duck:  # has the methods, is not an observer: refused when wired, not on the first request
        def finished(self, record: RequestRecord, request: object, response: object) -> None: ...

    for build in (lambda: DeferredObserver(Duck()), lambda: CompositeObserver(Log(), Duck())):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"Duck is not a ferryman\.telemetry\.RequestObserver"):
            build()


def test_a_settle_hook_drains_one_deferred_observer() -> None:
    settle = Settle()
    assert settle() == 0 and not settle.bound  # nothing in front yet: settling does nothing
    accounting = Accounting(settle=settle)
    observer = DeferredObserver(accounting, settle=settle)
    with pytest.raises(RuntimeError, match="already drains another"):
        DeferredObserver(Log(), settle=settle)

    async def main() -> int:
        observer.finished(record(0), None, None)
        return accounting.window("v1", since=0.0).requests  # the reader settles: sees the queued request

    assert asyncio.run(main()) == 1
    unhooked = Accounting()
    behind = DeferredObserver(unhooked)  # no shared hook: its readers see what was reported, nothing more

    async def queued() -> int:
        behind.finished(record(0), None, None)
        return unhooked.window("v1", since=0.0).requests

    assert asyncio.run(queued()) == 0


def test_readers_settle_first_so_they_see_every_answered_request() -> None:
    reg = CollectorRegistry()
    settle = Settle()
    accounting = Accounting(settle=settle)
    prometheus = PrometheusObserver(FerrymanMetrics(reg), settle=settle)
    observer = DeferredObserver(CompositeObserver(accounting, prometheus), settle=settle)

    async def main() -> tuple[int, float | None]:
        for i in range(7):
            observer.finished(record(i), None, None)
        # still inside the turn: the readers drain the queue themselves
        requests = accounting.window("v1", since=0.0).requests
        count = reg.get_sample_value(
            "ferryman_request_duration_seconds_count", {"model": "m", "version": "v1", "route": "stable"}
        )
        return requests, count

    assert asyncio.run(main()) == (7, 7.0)
    assert [t.requests for t in accounting.totals()] == [7]  # nothing reported twice by the turn's own drain


def test_a_broken_observer_is_logged_and_the_others_still_get_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = BatchLog()
    observer = DeferredObserver(CompositeObserver(Broken(), good))

    async def main() -> None:
        observer.finished(record(0), None, None)
        observer.finished(record(1), None, None)
        await asyncio.sleep(0)
        observer.finished(record(2), None, None)  # the next turn still reports
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="ferryman.telemetry"):
        asyncio.run(main())
    assert good.calls == [("many", 2), ("many", 1)]
    assert "Broken failed" in caplog.text


def test_a_new_loop_schedules_its_own_drain_when_the_old_one_stopped_first() -> None:
    inner = BatchLog()
    observer = DeferredObserver(inner)
    first = asyncio.new_event_loop()

    def finish_and_stop() -> None:  # the loop stops before the end-of-turn callback it was just given runs
        observer.finished(record(0), None, None)
        first.stop()

    try:
        first.call_soon(finish_and_stop)
        first.run_forever()
    finally:
        first.close()
    assert inner.calls == []

    async def on_a_new_loop() -> None:
        observer.finished(record(1), None, None)
        await asyncio.sleep(0)

    asyncio.run(on_a_new_loop())
    assert inner.calls == [("many", 2)]  # neither request waits for a reader


def test_a_reader_draining_on_another_thread_loses_and_repeats_nothing() -> None:
    settle = Settle()
    accounting = Accounting(settle=settle)
    observer = DeferredObserver(accounting, settle=settle)
    total = 20_000
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(accounting.window("v1", since=0.0).requests)

    thread = threading.Thread(target=reader)

    async def main() -> None:
        thread.start()
        for i in range(total):
            observer.finished(record(i % 50), None, None)
            if i % 64 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join()
    stats = accounting.window("v1", since=0.0)
    assert stats.requests == total
    assert (
        seen == sorted(seen) and seen and seen[-1] <= total
    )  # never more than were answered, never fewer later


def test_batches_count_exactly_like_single_requests() -> None:
    reg_one, reg_many = CollectorRegistry(), CollectorRegistry()
    one, many = PrometheusObserver(FerrymanMetrics(reg_one)), PrometheusObserver(FerrymanMetrics(reg_many))
    labels = np.array([0, 1, 1], dtype=np.int64)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]], dtype=np.float32)
    batch: list[Finished] = []
    for i in range(30):
        code = 500 if i % 7 == 0 else 200
        response = InferResponse(
            model_name="m",
            model_version="v1",
            outputs=[
                Tensor(name="label", datatype="INT64", shape=[1], data=labels[i % 3 : i % 3 + 1]),
                Tensor(name="probabilities", datatype="FP32", shape=[1, 2], data=probs[i % 3 : i % 3 + 1]),
            ],
        )
        batch.append((record(i, version="v1" if i % 2 else "v2", code=code), None, response))
    for item in batch:
        one.finished(*item)
    many.finished_many(batch)
    one.flush()
    many.flush()

    def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in reg.collect()
            if family.name.startswith("ferryman_")
            for s in family.samples
        }

    got, want = samples(reg_many), samples(reg_one)
    assert got == want
    assert (
        want[
            (
                "ferryman_requests_total",
                (("code", "500"), ("model", "m"), ("protocol", "v2"), ("route", "stable"), ("version", "v2")),
            )
        ]
        == 3.0
    )


def test_deferred_wraps_once_and_leaves_null_alone() -> None:
    null = NullObserver()
    assert deferred(null) is null
    once = deferred(BatchLog())
    assert deferred(once) is once and isinstance(once, DeferredObserver)
