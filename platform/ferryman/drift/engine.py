"""The drift engine interface, the job it runs, and the factory.

Engines import Evidently lazily (importing it costs ~10 s of CPU and ~250 MB), inside ``compute``, so
only the drift worker (a thread or a child process) ever pays for it. This module stays import-light:
the child process imports it and nothing that touches Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ferryman.drift.report import DriftResult

ENGINES = ("stattest", "preset")


@dataclass(frozen=True, slots=True)
class DriftJob:
    """Everything one run needs; picklable so it can cross into the drift process."""

    engine: str
    reference: np.ndarray  # (n_ref, n_features)
    current: np.ndarray  # (n_cur, n_features)
    feature_names: Sequence[str]
    drift_share: float  # dataset drift threshold (share of drifted features)
    reference_predictions: np.ndarray | None = None  # 1-D, one value per reference row
    current_predictions: np.ndarray | None = None  # 1-D, NaNs already dropped
    prediction_kind: str | None = None  # "class" or "value"


class DriftEngine(Protocol):
    name: str

    def compute(self, job: DriftJob) -> DriftResult: ...


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
