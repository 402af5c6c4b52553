"""Reference data: load a version's ``referenceData`` (.npy or .csv), predict on it, build the monitor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferryman.drift.monitor import DriftConfig, DriftMonitor
from ferryman.errors import ModelStoreError
from ferryman.store import fetch, redact

if TYPE_CHECKING:
    from ferryman.dataplane import ModelRepository
    from ferryman.engine import OnnxModel
    from ferryman.metrics import FerrymanMetrics
    from ferryman.spec import ModelDeployment

log = logging.getLogger("ferryman.drift")

MAX_REFERENCE_ROWS = 5000  # a deterministic subsample beyond this keeps every run's cost bounded


def load_reference(
    path: str | Path, *, max_rows: int = MAX_REFERENCE_ROWS
) -> tuple[np.ndarray, list[str] | None]:
    """Rows (n, features) as float64 and the column names when the file has them (.csv with a header)."""
    p = Path(path)
    names: list[str] | None = None
    try:
        if p.suffix == ".npy":
            data = np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            data, names = _read_csv(p)
        else:
            raise ModelStoreError(f"{p}: reference data must be a .npy or .csv file")
    except (OSError, ValueError, EOFError) as err:
        raise ModelStoreError(f"{p}: cannot read reference data: {err or type(err).__name__}") from err
    data = np.asarray(data)
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2 or data.shape[0] < 2 or data.dtype.kind not in "fiub":
        raise ModelStoreError(
            f"{p}: reference data must be a numeric 2-D table with rows, got {data.shape} {data.dtype}"
        )
    if data.shape[0] > max_rows:
        pick = np.sort(np.random.default_rng(0).choice(data.shape[0], size=max_rows, replace=False))
        data = data[pick]
    return data.astype(np.float64), names


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    import pandas as pd

    with path.open() as f:
        first = f.readline().strip().split(",")
    try:
        [float(x) for x in first]
        header = None
    except ValueError:
        header = 0
    frame = pd.read_csv(path, header=header)
    names = [str(c) for c in frame.columns] if header is not None else None
    return frame.to_numpy(dtype=np.float64), names


def prediction_tap(model: OnnxModel) -> tuple[str, str, str] | None:
    """(output name, op, kind) reading one prediction per row from the model's outputs, if any."""
    outputs = model.signature.outputs
    for t in outputs:
        if t.datatype.startswith(("INT", "UINT", "BOOL")) and len(t.shape) <= 2:
            return t.name, "label", "class"
    for t in outputs:
        if t.datatype.startswith("FP") and len(t.shape) == 2 and (t.shape[1] or 0) > 1:
            return t.name, "argmax", "class"
    for t in outputs:
        if t.datatype.startswith("FP") and (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            return t.name, "value", "value"
    return None


def reference_predictions(
    model: OnnxModel, reference: np.ndarray, *, input_name: str, tap: tuple[str, str, str]
) -> np.ndarray:
    """The version's own predictions on its reference rows (what live predictions are compared with)."""
    from ferryman.protocol.datatypes import V2_TO_NUMPY

    dtype = V2_TO_NUMPY.get(model.signature.input(input_name).datatype, np.dtype(np.float32))
    output, op, _kind = tap
    values = model.run({input_name: reference.astype(dtype)}, [output])[output]
    if op == "argmax":
        values = values.argmax(axis=1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def add_model_version(
    monitor: DriftMonitor, model: OnnxModel, reference: np.ndarray, *, feature_names: list[str] | None = None
) -> None:
    """Register a loaded version: features come from its first input, predictions from its outputs."""
    spec = model.signature.inputs[0]
    width = spec.shape[-1] if len(spec.shape) == 2 else None
    if width is not None and width != reference.shape[1]:
        raise ModelStoreError(
            f"version {model.version!r}: reference data has {reference.shape[1]} columns, "
            f"the model input {spec.name!r} takes {width}"
        )
    names = feature_names or [f"{spec.name}_{i}" for i in range(reference.shape[1])]
    tap = prediction_tap(model)
    ref_pred = reference_predictions(model, reference, input_name=spec.name, tap=tap) if tap else None
    monitor.add_version(
        model.version,
        reference=reference,
        feature_names=names,
        reference_predictions=ref_pred,
        prediction_kind=tap[2] if tap else None,
        input_name=spec.name,
        prediction_output=tap[0] if tap else None,
        prediction_op=tap[1] if tap else None,
    )


def monitor_for_deployment(
    md: ModelDeployment,
    repository: ModelRepository,
    *,
    metrics: FerrymanMetrics | None = None,
    config: DriftConfig | None = None,
    cache_dir: Path | None = None,
) -> DriftMonitor | None:
    """A monitor for every loaded version that has reference data; None when drift is off or none has."""
    if not md.spec.drift.enabled:
        return None
    monitor = DriftMonitor(md.name, config=config or DriftConfig.from_spec(md.spec.drift), metrics=metrics)
    for v in md.spec.versions:
        if not v.reference_data or v.name not in repository.models.get(md.name, {}):
            continue
        model = repository.get(md.name, v.name)
        if len(model.signature.inputs) != 1 or len(model.signature.inputs[0].shape) != 2:
            log.warning("drift: version %s has no single 2-D input; not monitored", v.name)
            continue
        try:
            path = fetch(v.reference_data, cache_dir=cache_dir)
        except ModelStoreError as err:
            raise ModelStoreError(
                f"version {v.name!r} reference data ({redact(v.reference_data)}): {err}"
            ) from err
        reference, names = load_reference(path)
        add_model_version(monitor, model, reference, feature_names=names)
    return monitor if monitor.versions else None
