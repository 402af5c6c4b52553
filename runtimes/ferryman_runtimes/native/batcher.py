"""Adaptive batching on an event loop: one :class:`VersionBatcher` per batched model version.

The queue and the policy are :mod:`ferryman.batching` (pure); this is the adapter. Requests are queued on
the event-loop thread (:meth:`VersionBatcher.submit` returns a :class:`~ferryman_runtimes.later.Later`);
a batch runs as one ONNX Runtime call on the version's own worker thread (ORT releases the GIL, so the loop
keeps reading, decoding and answering other connections meanwhile); its outputs are split back and each
request's ``Later`` is resolved on the loop, in the order the requests were queued, which answers it there
and then (no loop turn between the end of the run and the response being written).

* A request that finds the runner idle and nothing queued wakes the worker at the end of the current loop
  turn (requests parsed in the same turn join it); no timer, no added wait.
* While a batch runs, requests queue (the queue is shared with the worker under a lock); when the run ends
  the worker takes the next batch itself, at once if it is full or its oldest request has waited
  ``maxDelayMs``, else when one of those becomes true. It hands the finished batch's outputs to the loop
  (``call_soon_threadsafe``) and is already running the next one while the loop answers them: the model
  never waits for the loop (pipelining). The interpreter's switch interval is lowered so the worker gets
  the GIL back promptly after each run (:func:`tune_switch_interval`).
* A merged run the model rejects is retried request by request, so the request that caused it gets its own
  error and its batch mates their answers. A client that went away does not matter here: its answer is
  computed and dropped by the protocol.
* The queue is bounded: :meth:`submit` raises :class:`~ferryman.errors.Overloaded` (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from ferryman.batching import BatchQueue, Pending, SplitError, batch_key, merge, rows_of, split
from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError, InferenceFailed, Overloaded
from ferryman.spec import Batching
from ferryman_runtimes.later import Later

log = logging.getLogger("ferryman.batching")

# What a request's Later resolves to: its output arrays (in the order asked) and the run's compute seconds.
Outcome = tuple[list[np.ndarray], float]
# Called on the loop after each run: (requests in the batch, rows, each request's queue delay in seconds).
BatchObserver = Callable[[int, int, Sequence[float]], None]


IDLE, WAITING, RUNNING = "idle", "waiting", "running"  # the worker: nothing to do, a batch filling, a run

# With batching on, the interpreter hands the GIL between threads after SWITCH_INTERVAL_MS at most instead of
# CPython's 5 ms: after each run the worker needs the GIL back (to split the outputs and start the next run)
# while the event loop's thread is busy with requests, and the model must not sit idle waiting for it
# (docs/batching.md). FERRYMAN_SWITCH_INTERVAL_MS overrides it for the process.
SWITCH_INTERVAL_MS = 0.5
ENV_SWITCH_INTERVAL = "FERRYMAN_SWITCH_INTERVAL_MS"


def tune_switch_interval() -> float:
    """Set the interpreter's switch interval for batching (by :func:`batchers_for`, when a server has a
    batched version); the interval set, in seconds."""
    raw = os.environ.get(ENV_SWITCH_INTERVAL, "")
    try:
        ms = float(raw) if raw else SWITCH_INTERVAL_MS
    except ValueError:
        ms = SWITCH_INTERVAL_MS
        log.warning("%s=%r is not a number of milliseconds; using %s", ENV_SWITCH_INTERVAL, raw, ms)
    if not 0 < ms <= 1000:
        ms = SWITCH_INTERVAL_MS
    sys.setswitchinterval(ms / 1000)
    return ms / 1000


@dataclass(slots=True)
class Job:
    feed: dict[str, np.ndarray]
    names: list[str]
    later: Later[Outcome]
    loop: asyncio.AbstractEventLoop  # the loop the request came from: its answer is delivered there


class VersionBatcher:
    """The batcher of one model version: a queue filled on the event loop, drained by the version's worker
    thread, which takes its next batch itself the moment a run ends (no round trip through the loop), so the
    model never waits for the loop to answer the last batch before it starts the next."""

    def __init__(self, model: OnnxModel, batching: Batching, *, observe: BatchObserver | None = None) -> None:
        self.model = model
        self.batching = batching
        self.queue: BatchQueue[Job] = BatchQueue.from_spec(batching)
        self.observe = observe
        self._lock = threading.Lock()  # guards the queue and the fields below
        # The worker sleeps on this lock (held while it is awake) and is woken by its release: one futex
        # each way, none of threading.Condition's per-wait lock allocation and queueing (_sleep, _wake).
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._sleeping = False  # the worker is (about to be) asleep on _wakeup; whoever wakes it clears this
        self._state = IDLE
        self._kick_due = False  # a request found the worker idle: it is woken at the end of this loop turn
        self._kicked = False  # ... and has been: it takes what is queued
        self._closed = False
        self._thread: threading.Thread | None = None
        self.runs = 0  # model runs so far, and the requests they answered (for tests and the bench)
        self.requests = 0

    def submit(self, feed: dict[str, np.ndarray], names: list[str]) -> Later[Outcome]:
        """Queue one request's validated feed; on the event-loop thread. Raises Overloaded when full. The
        result is resolved on this loop when its batch has run; its callbacks run right then."""
        loop = asyncio.get_running_loop()
        later: Later[Outcome] = Later()
        job = Job(feed, names, later, loop)
        key, rows = batch_key(feed, names), rows_of(feed)
        with self._lock:
            if self._closed:
                raise InferenceFailed("server is shutting down")
            if not self.queue.offer(job, key=key, rows=rows, now=perf_counter()):
                raise Overloaded(
                    f"version {self.model.version!r}: batch queue full ({self.queue.max_queue} requests "
                    "waiting); retry later"
                )
            state = self._state
            if state == WAITING:
                self._wake()  # the batch it waits to fill may be full now
            elif state == IDLE and not (self._kick_due or self._kicked):
                self._kick_due = True
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._work, name=f"ferryman-batch-{self.model.version}", daemon=True
                    )
                    self._thread.start()
                loop.call_soon(self._kick)  # requests parsed in this loop turn join the first batch
        return later

    def _kick(self) -> None:
        with self._lock:
            self._kick_due, self._kicked = False, True
            self._wake()

    def _wake(self) -> None:
        """Wake the worker if it sleeps (with ``_lock`` held): at most one release per sleep."""
        if self._sleeping:
            self._sleeping = False
            self._wakeup.release()

    # -- on the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            self._run(batch)

    def _next(self) -> list[Pending[Job]] | None:
        """The next batch to run (marking the runner busy), waiting as the queue says; None once closed."""
        while True:
            timeout: float | None = None
            with self._lock:
                self.queue.running = False
                if self._closed:
                    return None
                if self._state != IDLE or self._kicked:
                    got = self.queue.take(perf_counter())
                    if isinstance(got, list):
                        self._state = RUNNING
                        self.queue.running = True
                        return got
                    if got is None:
                        self._state, self._kicked = IDLE, False
                    else:
                        self._state = WAITING
                        timeout = max(0.0, got - perf_counter())
                self._sleeping = True
            self._sleep(timeout)

    def _sleep(self, timeout: float | None) -> None:
        """Until woken (:meth:`_wake`), or ``timeout`` seconds have passed."""
        if self._wakeup.acquire(timeout=-1 if timeout is None else timeout):
            return
        with self._lock:
            if self._sleeping:  # timed out and nobody woke it meanwhile
                self._sleeping = False
                return
        self._wakeup.acquire()  # woken just as the wait timed out: take that release (it has happened)

    def _run(self, batch: list[Pending[Job]]) -> None:
        t0 = perf_counter()
        delays = [t0 - p.arrived for p in batch]
        try:
            results = run_jobs(self.model, [p.item for p in batch])
        except Exception as err:  # a bug here must not leave requests unanswered
            log.exception("batch run failed")
            results = [InferenceFailed(f"inference failed: {type(err).__name__}")] * len(batch)
        seconds = perf_counter() - t0
        loop = batch[0].item.loop
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these answers any more
            loop.call_soon_threadsafe(self._done, batch, results, seconds, delays)

    # -- on the loop --------------------------------------------------------------------------------
    def _done(
        self,
        batch: list[Pending[Job]],
        results: list[list[np.ndarray] | FerrymanError],
        seconds: float,
        delays: list[float],
    ) -> None:
        self.runs += 1
        self.requests += len(batch)
        for p, result in zip(batch, results, strict=True):
            later = p.item.later  # resolving it answers the request (its callbacks write the response)
            if isinstance(result, FerrymanError):
                later.set_exception(result)
            else:
                later.set_result((result, seconds))
        if self.observe is not None:
            try:
                self.observe(len(batch), sum(p.rows for p in batch), delays)
            except Exception:
                log.exception("batch observer failed")

    def close(self) -> None:
        """Stop taking batches; queued requests are answered 500 (the server is stopping). A run under way
        finishes on its (daemon) thread; its answers go nowhere once the loop is closed."""
        with self._lock:
            self._closed = True
            drained = self.queue.drain()
            self._wake()
        for p in drained:
            if not p.item.later.done():
                p.item.later.set_exception(InferenceFailed("server is shutting down"))


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
    """A batcher for every model whose ``settings`` are not None, keyed by (model name, version); the
    servers' one way to build them, which also tunes the process's switch interval when there is one."""
    out = {}
    for m in models:
        b = settings(m)
        if b is not None:
            out[(m.name, m.version)] = VersionBatcher(m, b, observe=observe(m) if observe else None)
    if out:
        tune_switch_interval()
    return out
