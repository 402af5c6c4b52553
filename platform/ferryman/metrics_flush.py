"""When the request observers' counts reach prometheus_client: on every collection of a registry, on a
timer in multiprocess mode, and at shutdown.

The request path only counts (``ferryman.request_metrics``); publishing is a separate step, ``flush``.
This module knows nothing about which metrics exist: it keeps weak references to anything with a
``flush()`` (a ``FerrymanMetrics``) and calls it. A leaf: it imports no other ferryman module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_INTERVAL_SECONDS = (
    0.25  # multiprocess mode: each worker publishes this often (a scrape reads every worker)
)


class Flushable(Protocol):
    def flush(self) -> int: ...


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, or None (everything in process memory)."""
    return os.environ.get(ENV_MULTIPROC) or None


class FlushOnCollect:
    """A registry collector without samples: collecting the registry publishes the counts first.
    Register it before the metric families so it is collected first."""

    def __init__(self, target: Flushable) -> None:
        self._target = weakref.ref(target)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        target = self._target()
        if target is not None:
            target.flush()
        return []


_every: weakref.WeakSet[Any] = weakref.WeakSet()
_flusher: threading.Thread | None = None
_lock = threading.Lock()


def track(target: Flushable) -> None:
    """Include ``target`` in :func:`flush_all` (held weakly: a dropped target is forgotten)."""
    _every.add(target)


def flush_all() -> int:
    """Publish the counts of every tracked target in this process (the timer and shutdown hooks)."""
    return sum(t.flush() for t in list(_every))


def start_periodic_flush() -> None:
    """Multiprocess mode: any worker answers a scrape from every worker's files, so each worker publishes
    its counts on a timer (and at shutdown, see :func:`flush_all`). Idempotent."""
    global _flusher
    with _lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _flusher = threading.Thread(target=_flush_periodically, name="ferryman-metrics-flush", daemon=True)
        _flusher.start()


def _flush_periodically() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_SECONDS)
        try:
            flush_all()
        except Exception:  # a failed publish must not kill the timer
            logging.getLogger("ferryman.metrics").exception("metrics flush failed")
