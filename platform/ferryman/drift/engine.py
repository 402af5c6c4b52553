"""The drift engine factory and the entry point the drift worker calls (``compute``, ``warm_up``).

Engines import Evidently lazily (importing it costs ~10 s of CPU and ~250 MB), inside ``compute``, so
only the drift worker (a thread or a child process) ever pays for it. This module stays import-light:
the child process imports it and nothing that touches Prometheus.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ferryman.drift.job import ENGINES, DriftEngine, DriftJob
from ferryman.drift.report import DriftResult


def make_engine(name: str) -> DriftEngine:
    """The factory: ``stattest`` (default) or ``preset``."""
    if name == "stattest":
        from ferryman.drift.evidently_stattests import EvidentlyStatTests

        return EvidentlyStatTests()
    if name == "preset":
        from ferryman.drift.evidently_preset import EvidentlyPreset

        return EvidentlyPreset()
    raise ValueError(f"unknown drift engine {name!r} (known: {', '.join(ENGINES)})")


_warm: set[str] = set()


def compute(job: DriftJob) -> DriftResult:
    """Run the job; ``seconds`` in the result is the computation alone (Evidently's import excluded)."""
    if job.engine not in _warm:
        warm_up(job.engine)
    t0 = time.perf_counter()
    result = make_engine(job.engine).compute(job)
    return replace(result, seconds=time.perf_counter() - t0)


def warm_up(engine: str) -> None:
    """Pay Evidently's import cost now (~10 s of CPU, once per process)."""
    make_engine(engine)
    import evidently.legacy.calculations.stattests.registry
    import pandas  # noqa: F401

    if engine == "preset":
        import evidently.presets  # noqa: F401
    _warm.add(engine)
