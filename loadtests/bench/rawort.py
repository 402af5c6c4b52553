"""The limit: ``session.run`` on the same model in-process, no HTTP, timed call by call."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ferryman import budget
from loadtests.contenders.ort_session import make_session


def measure(
    model_path: str, rows: np.ndarray, *, duration_s: float, warmup_s: float = 0.5, threads: int = 1
) -> dict[str, Any]:
    """Call the session back to back on ``rows`` (one batch) for ``duration_s``; calls/s and exact latency."""
    session = make_session(model_path, threads=threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(rows, dtype=np.float32)}
    names = [o.name for o in session.get_outputs()]
    run = session.run
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        run(names, feed)
    times: list[float] = []
    clock = time.perf_counter
    t0 = clock()
    stop = t0 + duration_s
    now = t0
    while now < stop:
        run(names, feed)
        after = clock()
        times.append(after - now)
        now = after
    elapsed = now - t0
    ms = np.asarray(times) * 1000.0
    calls = len(times)
    return {
        "requests": calls,
        "duration_s": elapsed,
        "rps": calls / elapsed,
        "rows_per_request": len(rows),
        "rows_per_s": calls * len(rows) / elapsed,
        "p50_ms": budget.percentile(ms, 50),
        "p90_ms": budget.percentile(ms, 90),
        "p99_ms": budget.percentile(ms, 99),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "non_2xx": 0,
        "socket_errors": 0,
    }
