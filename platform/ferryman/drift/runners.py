"""Where a drift job runs: in the monitor's worker thread, or in a dedicated child process.

``process`` (the servers' default) keeps Evidently's ~10 s import, its ~250 MB and every pure-Python
cycle of the computation out of the serving process, so the GIL the event loop needs is never held by
drift work: the worker thread only pickles a window into a pipe and blocks (GIL released) on the answer.
``thread`` runs the engine in the worker thread itself (no extra process; for tests and small boxes
where a process is not allowed); it still never runs on the request path.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any, Protocol

from ferryman.drift.engine import compute, warm_up
from ferryman.drift.job import DriftJob
from ferryman.drift.report import DriftResult

log = logging.getLogger("ferryman.drift")

RUNNERS = ("process", "thread")


class DriftRunnerError(RuntimeError):
    pass


class Runner(Protocol):
    def run(self, job: DriftJob) -> DriftResult: ...

    def ready(self) -> bool:
        """Whether the engine is loaded (a first job will not pay for Evidently's import)."""
        ...

    def close(self) -> None: ...


class InlineRunner:
    """Runs the engine in the calling thread (the monitor's worker thread)."""

    def run(self, job: DriftJob) -> DriftResult:
        return compute(job)

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        return None


def _background() -> None:
    """Make this process background work: the serving process must win the CPU at once, every time.

    Linux's SCHED_IDLE runs it only on CPU time nothing else wants, and any runnable task preempts it
    immediately; a merely niced process still gets whole scheduler slices (about a millisecond each) while
    the server waits, which showed up as millisecond gaps in the server's p99. Elsewhere: nice 15.
    """
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))
            return
    with contextlib.suppress(OSError):
        os.nice(15)


def _child_main(conn: Connection, engine: str) -> None:
    """The drift process: warm up, then answer jobs until the pipe closes (parent gone or closed).

    The engine's import (seconds of CPU, once, at start-up, before the engine reports ready) runs at the
    server's own priority; only then does the process become background work. At idle priority the import
    got the CPU only when nothing on the machine wanted it: on a busy machine it took many minutes or never
    finished, so no drift was ever measured and a canary held forever waiting for its first measurement.
    A run (tens of milliseconds of CPU) still yields to everything else.
    """
    try:
        warm_up(engine)
    except Exception as err:  # Evidently missing: every job will report the error
        log.warning("drift engine %s unavailable: %s", engine, err)
    try:
        conn.send(("ready", None))  # the first message, always: the parent waits for it before a job
    except (OSError, BrokenPipeError):
        return
    _background()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            conn.send(("ok", compute(job)))
        except Exception as err:
            conn.send(("error", f"{type(err).__name__}: {err}"))


class ProcessRunner:
    """One long-lived spawned child per monitor; restarted if it dies."""

    def __init__(self, *, engine: str = "stattest", timeout_seconds: float = 600.0) -> None:
        self.engine = engine
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._ready = False  # the current child has reported that its engine is loaded

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._stop_locked()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_child_main, args=(child, self.engine), name="ferryman-drift", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn, self._ready = process, parent, False
        return parent

    def ready(self) -> bool:
        """Whether the child finished loading its engine (never waits; starts no process).

        ``GET /drift`` calls this on the server's event loop, so it must not block: a run holds the lock
        for as long as the child computes (or is still importing its engine, seconds to minutes on a busy
        machine), and waiting for it would stall every request. While a run holds the lock, the answer is
        the last one known (the run itself takes the child's ready message).
        """
        if not self._lock.acquire(blocking=False):
            return self._ready
        try:
            if self._ready or self._conn is None:
                return self._ready
            try:
                if self._conn.poll(0):
                    self._take_ready(self._conn)
            except (EOFError, OSError):
                return False
            return self._ready
        finally:
            self._lock.release()

    def _take_ready(self, conn: Connection) -> None:
        status, _ = conn.recv()
        if status != "ready":
            raise DriftRunnerError(f"drift process: unexpected first message {status!r}")
        self._ready = True

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def run(self, job: DriftJob) -> DriftResult:
        with self._lock:
            conn = self._ensure()
            try:
                if not self._ready:  # the child's first message says its engine is loaded
                    if not conn.poll(self.timeout_seconds):
                        self._stop_locked()
                        raise DriftRunnerError(
                            f"drift process did not start within {self.timeout_seconds:.0f} s"
                        )
                    self._take_ready(conn)
                conn.send(job)
                if not conn.poll(self.timeout_seconds):
                    self._stop_locked()
                    raise DriftRunnerError(
                        f"drift process did not answer within {self.timeout_seconds:.0f} s"
                    )
                status, payload = conn.recv()
            except (EOFError, OSError, BrokenPipeError) as err:
                self._stop_locked()
                raise DriftRunnerError(f"drift process died: {err}") from err
        if status != "ok":
            raise DriftRunnerError(str(payload))
        result: DriftResult = payload
        return result

    def close(self) -> None:
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()  # a run in progress sees EOF and raises; we need not wait for it
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        self._ready = False
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        if process is not None:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)


def make_runner(isolation: str, *, engine: str) -> Runner:
    """The factory: ``process`` or ``thread``."""
    if isolation == "process":
        return ProcessRunner(engine=engine)
    if isolation == "thread":
        return InlineRunner()
    raise ValueError(f"unknown drift isolation {isolation!r} (known: {', '.join(RUNNERS)})")
