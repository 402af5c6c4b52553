"""Engine running Evidently's full ``Report([DataDriftPreset()])``: the reference implementation.

Slow (the report renders plotly widgets for every column: ~3.5 s for 30 features on one core), so it is
opt-in (``engine="preset"``); the default ``stattest`` engine gives the same numbers ~70x faster.
"""

from __future__ import annotations

from typing import Any

from ferryman.drift.evidently_stattests import is_p_value, prediction_drift
from ferryman.drift.job import DriftJob
from ferryman.drift.report import DriftResult, FeatureDrift


class EvidentlyPreset:
    name = "preset"

    def compute(self, job: DriftJob) -> DriftResult:
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        names = list(job.feature_names)
        definition = DataDefinition(numerical_columns=names)
        current = Dataset.from_pandas(pd.DataFrame(job.current, columns=names), data_definition=definition)
        reference = Dataset.from_pandas(
            pd.DataFrame(job.reference, columns=names), data_definition=definition
        )
        snapshot = Report([DataDriftPreset(drift_share=job.drift_share)]).run(current, reference)
        share = 0.0
        by_column: dict[str, FeatureDrift] = {}
        for metric in snapshot.dict()["metrics"]:
            config: dict[str, Any] = metric["config"]
            kind = config.get("type", "")
            if kind.endswith(":DriftedColumnsCount"):
                share = float(metric["value"]["share"])
            elif kind.endswith(":ValueDrift"):
                method, threshold, score = (
                    str(config["method"]),
                    float(config["threshold"]),
                    float(metric["value"]),
                )
                drifted = score < threshold if is_p_value(method) else score >= threshold
                by_column[config["column"]] = FeatureDrift(
                    name=config["column"], score=score, drifted=drifted, method=method, threshold=threshold
                )
        features = tuple(by_column[n] for n in names if n in by_column)
        return DriftResult(features=features, share=share, prediction=prediction_drift(job))
