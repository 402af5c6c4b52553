"""The keyed work queue: one reconcile per key at a time, duplicate requests coalesce, a request during a
reconcile runs once more afterwards, a failing reconcile does not stop the workers."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from ferryman_operator.workqueue import WorkQueue


def test_coalesces_serialises_and_survives_failures() -> None:
    async def scenario() -> tuple[list[tuple[str, Hashable]], int]:
        log: list[tuple[str, Hashable]] = []
        release = asyncio.Event()
        running: set[Hashable] = set()
        overlap = 0

        async def handler(key: Hashable) -> None:
            nonlocal overlap
            if key in running:
                overlap += 1
            running.add(key)
            log.append(("start", key))
            if key == "slow" and not release.is_set():
                await release.wait()
            running.discard(key)
            log.append(("end", key))
            if key == "boom":
                raise RuntimeError("reconcile failed")

        queue = WorkQueue(handler, workers=2)
        queue.start()
        queue.add("slow")
        queue.add("slow")  # coalesced with the queued one
        await asyncio.sleep(0.05)
        queue.add("slow")  # arrives while "slow" runs: one more run afterwards
        queue.add("slow")
        queue.add("boom")
        await asyncio.sleep(0.05)
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if queue.busy == 0 and log.count(("end", "slow")) == 2:
                break
        queue.add("after")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if ("end", "after") in log:
                break
        await queue.stop()
        return log, overlap

    log, overlap = asyncio.run(scenario())
    assert overlap == 0
    assert log.count(("start", "slow")) == 2
    assert log.count(("start", "boom")) == 1
    assert ("end", "after") in log  # the workers outlived the failure


def test_timers_earliest_wins_and_failures_retry_with_backoff() -> None:
    async def scenario() -> tuple[list[Hashable], int]:
        seen: list[Hashable] = []
        fails = {"flaky": 2}

        async def handler(key: Hashable) -> None:
            seen.append(key)
            if fails.get(str(key), 0) > 0:
                fails[str(key)] -= 1
                raise RuntimeError("apiserver away")

        queue = WorkQueue(handler, workers=2, retry_base=0.01, retry_cap=0.05)
        queue.start()
        queue.add_after("late", 10.0)
        queue.add_after("late", 0.02)  # earlier: replaces the timer
        queue.add_after("late", 5.0)  # later: ignored
        queue.add_after("gone", 0.02)
        queue.forget("gone")
        queue.add("flaky")  # fails twice, retried by itself
        for _ in range(100):
            await asyncio.sleep(0.01)
            if seen.count("flaky") == 3 and "late" in seen:
                break
        scheduled = queue.scheduled
        await queue.stop()
        return seen, scheduled

    seen, scheduled = asyncio.run(scenario())
    assert seen.count("late") == 1 and "gone" not in seen
    assert seen.count("flaky") == 3
    assert scheduled == 0


def test_urgent_keys_go_first() -> None:
    async def scenario() -> list[Hashable]:
        order: list[Hashable] = []
        gate = asyncio.Event()

        async def handler(key: Hashable) -> None:
            if key == "busy":
                await gate.wait()
            order.append(key)

        queue = WorkQueue(handler, workers=1)
        queue.start()
        queue.add("busy")
        await asyncio.sleep(0.01)
        queue.add("old-1")
        queue.add("old-2")
        queue.add("new", urgent=True)  # a resource seen for the first time
        gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(order) == 4:
                break
        await queue.stop()
        return order

    assert asyncio.run(scenario()) == ["busy", "new", "old-1", "old-2"]
