"""What one drift run needs (``DriftJob``), the engine interface and the engine names: a leaf module.

The monitor builds jobs, the engines run them and the factory (``ferryman.drift.engine``) picks an engine;
all three import this module and nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
