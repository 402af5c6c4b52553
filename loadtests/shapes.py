"""Load shapes for the Locust scenarios: steady, ramp (to the knee) and spike.

The schedule is a pure function of the elapsed time (:func:`users_at`; no Locust import here, so it is
unit-testable). ``loadtests.locustfile`` wraps it in ``LoadTestShape`` classes that read ``--users``,
``--spawn-rate`` and ``--run-time`` and exposes exactly one of them, chosen by ``FERRYMAN_LT_SHAPE``.
"""

from __future__ import annotations

import math

SHAPES = ("steady", "ramp", "spike")
DEFAULT_RUN_TIME_S = 60.0
RAMP_STEPS = 10


def users_at(
    shape: str, elapsed_s: float, *, users: int, spawn_rate: float, run_time_s: float
) -> tuple[int, float] | None:
    """(user count, spawn rate) the shape asks for ``elapsed_s`` into the run, or None when it is over."""
    if elapsed_s >= run_time_s:
        return None
    fraction = elapsed_s / run_time_s
    if shape == "steady":
        return users, spawn_rate
    if shape == "ramp":
        # Equal-length steps from users/RAMP_STEPS up to users: the knee shows as the step where
        # latency bends upwards while throughput stops growing.
        step = min(int(fraction * RAMP_STEPS), RAMP_STEPS - 1)
        return max(1, math.ceil(users * (step + 1) / RAMP_STEPS)), spawn_rate
    if shape == "spike":
        # 40 % baseline, 20 % spike to full load (spawned within a second), 40 % baseline again.
        baseline = max(1, users // 5)
        if 0.4 <= fraction < 0.6:
            return users, max(spawn_rate, float(users))
        return baseline, max(spawn_rate, float(users))
    raise ValueError(f"unknown shape {shape!r} (choose from {', '.join(SHAPES)})")
