"""A keyed work queue: at most one reconcile per resource at a time, requests coalesce.

A key added while it is queued is not queued twice; a key added while it is being reconciled is
reconciled once more afterwards (the change that triggered it might have been read too early). An
``urgent`` key (a resource seen for the first time) goes ahead of the others.
:meth:`WorkQueue.add_after` schedules a key for later (an analysis interval, a retry); the earliest
request wins. A failing reconcile is retried with per-key exponential backoff (``retry_base`` doubling up
to ``retry_cap`` seconds); a worker never dies of one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("ferryman.operator")


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Hashable], Awaitable[None]],
        *,
        workers: int = 4,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._queue: asyncio.PriorityQueue[tuple[int, int, Hashable]] = asyncio.PriorityQueue()
        self._seq = 0
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._later: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.done = 0  # reconciles finished (for the health endpoint and the benchmark)

    def add(self, key: Hashable, *, urgent: bool = False) -> None:
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._seq += 1
            self._queue.put_nowait((0 if urgent else 1, self._seq, key))

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds, unless it is already due earlier."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        current = self._later.get(key)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()
        self._later[key] = (when, loop.call_at(when, self._fire, key))

    def forget(self, key: Hashable) -> None:
        """Drop timers and retry counts of a key that is gone."""
        later = self._later.pop(key, None)
        if later is not None:
            later[1].cancel()
        self._failures.pop(key, None)

    def _fire(self, key: Hashable) -> None:
        self._later.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for _when, handle in self._later.values():
            handle.cancel()
        self._later.clear()

    @property
    def busy(self) -> int:
        return len(self._running) + len(self._queued)

    @property
    def scheduled(self) -> int:
        return len(self._later)

    async def _work(self) -> None:
        while True:
            _priority, _seq, key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self.handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self.retry_cap, self.retry_base * 2 ** (failures - 1)) * (
                    0.5 + random.random() / 2
                )
                log.exception("reconcile of %s failed (%d in a row); retrying in %.1fs", key, failures, delay)
                self.add_after(key, delay)
            finally:
                self._running.discard(key)
                self.done += 1
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
