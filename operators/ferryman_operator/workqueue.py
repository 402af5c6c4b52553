"""A keyed work queue: at most one reconcile per resource at a time, requests coalesce.

A key added while it is queued is not queued twice; a key added while it is being reconciled is
reconciled once more afterwards (the change that triggered it might have been read too early). Failures
are logged and retried by the next resync; a worker never dies of one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("ferryman.operator")


class WorkQueue:
    def __init__(self, handler: Callable[[Hashable], Awaitable[None]], *, workers: int = 4) -> None:
        self.handler = handler
        self.workers = workers
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: Hashable) -> None:
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def busy(self) -> int:
        return len(self._running) + len(self._queued)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self.handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile of %s failed; the next resync retries", key)
            finally:
                self._running.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
