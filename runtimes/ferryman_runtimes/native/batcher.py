"""Adaptive batching on an event loop: one :class:`VersionBatcher` per batched model version.

The queue and the policy are :mod:`ferryman.batching` (pure); this is the adapter. Requests are queued on
the event-loop thread (:meth:`VersionBatcher.submit` returns a future); a batch runs as one ONNX Runtime
call on the version's own worker thread (ORT releases the GIL, so the loop keeps reading, decoding and
answering other connections meanwhile); its outputs are split back and each request's future is resolved
on the loop, in the order the requests were queued.

* A request that finds the runner idle and nothing queued is dispatched at the end of the current loop
  turn (requests parsed in the same turn join it); no timer, no added wait.
* While a batch runs, requests queue; when it finishes the next batch starts at once if it is full or its
  oldest request has waited ``maxDelayMs``, else when one of those becomes true.
* A merged run the model rejects is retried request by request, so the request that caused it gets its own
  error and its batch mates their answers. A client that went away does not matter here: its answer is
  computed and dropped by the protocol.
* The queue is bounded: :meth:`submit` raises :class:`~ferryman.errors.Overloaded` (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from ferryman.batching import BatchQueue, Pending, SplitError, batch_key, merge, rows_of, split
from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError, InferenceFailed, Overloaded
from ferryman.spec import Batching

log = logging.getLogger("ferryman.batching")

# What a request's future resolves to: its output arrays (in the order asked) and the run's compute seconds.
Outcome = tuple[list[np.ndarray], float]
# Called on the loop after each run: (requests in the batch, rows, each request's queue delay in seconds).
BatchObserver = Callable[[int, int, Sequence[float]], None]


@dataclass(slots=True)
class Job:
    feed: dict[str, np.ndarray]
    names: list[str]
    future: asyncio.Future[Outcome]


class VersionBatcher:
    def __init__(self, model: OnnxModel, batching: Batching, *, observe: BatchObserver | None = None) -> None:
        self.model = model
        self.batching = batching
        self.queue: BatchQueue[Job] = BatchQueue.from_spec(batching)
        self.observe = observe
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ferryman-batch-{model.version}")
        self._scheduled = False  # a dispatch is due at the end of this loop turn
        self._timer: asyncio.TimerHandle | None = None
        self.runs = 0  # model runs so far, and the requests they answered (for tests and the bench)
        self.requests = 0

    def submit(self, feed: dict[str, np.ndarray], names: list[str]) -> asyncio.Future[Outcome]:
        """Queue one request's validated feed; on the event-loop thread. Raises Overloaded when full."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if not self.queue.offer(
            Job(feed, names, future), key=batch_key(feed, names), rows=rows_of(feed), now=loop.time()
        ):
            raise Overloaded(
                f"version {self.model.version!r}: batch queue full ({self.queue.max_queue} requests "
                "waiting); retry later"
            )
        if not self.queue.running and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch, loop)
        return future

    # -- on the loop --------------------------------------------------------------------------------
    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.queue.running:
            return
        now = loop.time()
        got = self.queue.take(now)
        if got is None:
            return
        if isinstance(got, float):
            self._timer = loop.call_at(got, self._dispatch, loop)
            return
        self.queue.running = True
        delays = [now - p.arrived for p in got]
        try:
            self._pool.submit(self._run, loop, got, delays)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.queue.running = False
            self._settle(got, [InferenceFailed("server is shutting down")] * len(got))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[Pending[Job]],
        results: list[list[np.ndarray] | FerrymanError],
        seconds: float,
        delays: list[float],
    ) -> None:
        self.queue.running = False
        self.runs += 1
        self.requests += len(batch)
        self._settle(batch, results, seconds)
        if self.observe is not None:
            try:
                self.observe(len(batch), sum(p.rows for p in batch), delays)
            except Exception:
                log.exception("batch observer failed")
        self._dispatch(loop)

    @staticmethod
    def _settle(
        batch: list[Pending[Job]], results: Sequence[list[np.ndarray] | FerrymanError], seconds: float = 0.0
    ) -> None:
        for p, result in zip(batch, results, strict=True):
            future = p.item.future
            if future.done():
                continue
            if isinstance(result, FerrymanError):
                future.set_exception(result)
            else:
                future.set_result((result, seconds))

    # -- on the worker thread -----------------------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Pending[Job]], delays: list[float]) -> None:
        t0 = perf_counter()
        try:
            results = run_jobs(self.model, [p.item for p in batch])
        except Exception as err:  # a bug here must not leave futures unresolved
            log.exception("batch run failed")
            results = [InferenceFailed(f"inference failed: {type(err).__name__}")] * len(batch)
        seconds = perf_counter() - t0
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these answers any more
            loop.call_soon_threadsafe(self._done, loop, batch, results, seconds, delays)

    def close(self) -> None:
        """Stop taking batches; queued requests are answered 500 (the server is stopping)."""
        for p in self.queue.drain():
            if not p.item.future.done():
                p.item.future.set_exception(InferenceFailed("server is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)


def run_one(model: OnnxModel, job: Job) -> list[np.ndarray] | FerrymanError:
    try:
        return model.execute(job.feed, job.names)
    except FerrymanError as err:
        return err
    except Exception as err:  # never let one request take the batch (or the server) down
        return InferenceFailed(f"inference failed: {type(err).__name__}")


def run_jobs(model: OnnxModel, jobs: list[Job]) -> list[list[np.ndarray] | FerrymanError]:
    """Each job's outputs (or its own error), running the jobs as one merged call when there are several
    (they share a batch key: the queue only groups those); a merged call that fails, or whose outputs
    cannot be split by rows, is retried one job at a time."""
    if len(jobs) == 1:
        return [run_one(model, jobs[0])]
    feed, counts = merge([j.feed for j in jobs])
    try:
        return list(split(model.execute(feed, jobs[0].names), counts))
    except (FerrymanError, SplitError):
        return [run_one(model, j) for j in jobs]


def batchers_for(
    models: Sequence[OnnxModel],
    settings: Callable[[OnnxModel], Batching | None],
    *,
    observe: Callable[[OnnxModel], BatchObserver | None] | None = None,
) -> dict[tuple[str, str], VersionBatcher]:
    """A batcher for every model whose ``settings`` are not None, keyed by (model name, version)."""
    out = {}
    for m in models:
        b = settings(m)
        if b is not None:
            out[(m.name, m.version)] = VersionBatcher(m, b, observe=observe(m) if observe else None)
    return out
