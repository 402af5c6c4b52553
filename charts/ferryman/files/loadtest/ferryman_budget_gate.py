"""The latency-budget gate for distributed Locust runs (the chart's in-cluster load test).

Load it next to ferryman's locustfile: ``locust -f loadtests/locustfile.py,ferryman_budget_gate.py ...``.

Locust keeps response times between 100 ms and 1 s rounded to 10 ms, so its own p99 cannot decide a 100 ms
budget. Every process therefore records the exact time of each request; workers ship the times recorded
since their last report inside Locust's own periodic worker report (``report_to_master``), so the master
holds exactly the requests its statistics count. When the run ends the master summarises them with
:mod:`ferryman.budget` (nearest-rank percentiles), logs one JSON line prefixed ``ferryman-budget-gate:``
and sets the process exit code: 0 when the run met the budget, 1 when p99 or the error rate exceeded it,
2 when no request completed.

Settings (environment): ``FERRYMAN_LT_BUDGET_MS`` (p99 budget in milliseconds, default 100),
``FERRYMAN_LT_MAX_ERROR_RATE`` (fraction, default 0.01), ``FERRYMAN_LT_MIN_REQUESTS`` (default 1).
"""

from __future__ import annotations

import json
import logging
import math
import os
from array import array
from typing import Any

import numpy as np
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from ferryman import budget

log = logging.getLogger("ferryman.budget_gate")

REPORT_KEY = "ferryman_exact"
PREFIX = "ferryman-budget-gate:"
EXIT_PASSED, EXIT_FAILED, EXIT_NO_DATA = 0, 1, 2


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as err:
        raise SystemExit(f"{name}={raw!r}: not a number") from err
    if not math.isfinite(value) or value < 0:
        raise SystemExit(f"{name}={raw!r}: must be a finite number >= 0")
    return value


BUDGET_MS = _env_float("FERRYMAN_LT_BUDGET_MS", 100.0)
MAX_ERROR_RATE = _env_float("FERRYMAN_LT_MAX_ERROR_RATE", 0.01)
MIN_REQUESTS = int(_env_float("FERRYMAN_LT_MIN_REQUESTS", 1.0))

# Requests recorded by this process (workers: since the last report; master and local runs: all of them).
_times = array("d")
_failed = array("b")


@events.request.add_listener
def _record(response_time: float | None = None, exception: Any = None, **_: Any) -> None:
    # A request without a time (connection error before timing) is failed and counts as infinitely slow.
    _times.append(float(response_time) if response_time is not None else math.inf)
    _failed.append(1 if exception is not None else 0)


@events.report_to_master.add_listener
def _ship(client_id: str, data: dict[str, Any]) -> None:
    """Worker: move the times recorded since the last report into this report."""
    data[REPORT_KEY] = {"times_ms": _times.tobytes(), "failed": _failed.tobytes()}
    del _times[:]
    del _failed[:]


@events.worker_report.add_listener
def _receive(client_id: str, data: dict[str, Any]) -> None:
    """Master: keep what a worker shipped."""
    shipped = data.get(REPORT_KEY)
    if shipped:
        _times.frombytes(shipped["times_ms"])
        _failed.frombytes(shipped["failed"])


def verdict(times_ms: np.ndarray, failed: np.ndarray, *, budget_ms: float, max_error_rate: float,
            min_requests: int = 1) -> tuple[int, dict[str, Any]]:
    """Exit code and report of a run from every request's exact time and failure flag."""
    if times_ms.size == 0:
        return EXIT_NO_DATA, {"passed": False, "requests": 0, "reasons": ["no request completed"],
                              "budget_ms": budget_ms, "max_error_rate": max_error_rate}
    summary = budget.summarize(times_ms, failures=int(failed.sum()))
    result = budget.evaluate(summary, budget_ms=budget_ms, max_error_rate=max_error_rate,
                             min_requests=min_requests)
    report = {"passed": result.passed, "reasons": list(result.reasons), "budget_ms": budget_ms,
              "max_error_rate": max_error_rate, **summary.as_dict()}
    return (EXIT_PASSED if result.passed else EXIT_FAILED), report


@events.quitting.add_listener
def _gate(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # workers only ship their times; the master decides
    times = np.frombuffer(_times, dtype=np.float64) if len(_times) else np.empty(0, dtype=np.float64)
    failed = np.frombuffer(_failed, dtype=np.int8).astype(bool) if len(_failed) else np.empty(0, dtype=bool)
    code, report = verdict(times, failed, budget_ms=BUDGET_MS, max_error_rate=MAX_ERROR_RATE,
                           min_requests=MIN_REQUESTS)
    report["mode"] = "distributed" if isinstance(environment.runner, MasterRunner) else "local"
    report["locust_requests"] = environment.stats.total.num_requests if environment.stats else None
    line = f"{PREFIX} {json.dumps(report, default=float, sort_keys=True)}"
    print(line, flush=True)
    (log.info if code == EXIT_PASSED else log.error)(
        "budget gate %s: %s", "PASSED" if code == EXIT_PASSED else "FAILED",
        "; ".join(report["reasons"]) or f"p99 {report.get('p99_ms', float('nan')):.3f} ms within {BUDGET_MS:g} ms")
    environment.process_exit_code = code
