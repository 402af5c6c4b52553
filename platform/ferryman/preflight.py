"""What `ferryman serve` and `ferryman up` check before serving a spec, as one call `ferryman validate` runs.

    problems = check_deployment(md)      # [] when every version would load and every drift reference fits

Per version, through the same code (so with the same messages) as serving: fetch the model file (a missing
path, an HTTP error, a bad S3 object) and verify its sha256, load it as ONNX (not ONNX, unsupported opset,
ONNX Runtime refusing it); then, when drift monitoring is on and the version names ``referenceData``: fetch
and read the reference table, check its width against the model's input, and run the model on it (the
reference predictions serving computes), which checks the model's signature against the data. Every version
is checked, so one run names every problem, not only the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ferryman.errors import FerrymanError, ModelStoreError
from ferryman.spec import ModelDeployment, ModelVersion

if TYPE_CHECKING:
    from ferryman.engine import OnnxModel


def check_deployment(md: ModelDeployment, *, cache_dir: Path | None = None) -> list[str]:
    """Every problem that would stop ``serve``/``up`` from serving ``md`` (empty: it would serve)."""
    from ferryman.dataplane import load_versions

    problems: list[str] = []
    for v in md.spec.versions:
        try:
            (model,) = load_versions(md, versions=[v.name], cache_dir=cache_dir)
        except FerrymanError as err:
            problems.append(str(err))
            continue
        if md.spec.drift.enabled and v.reference_data:
            problem = _check_reference(md, v, model, cache_dir=cache_dir)
            if problem:
                problems.append(problem)
    return problems


def _check_reference(
    md: ModelDeployment, v: ModelVersion, model: OnnxModel, *, cache_dir: Path | None
) -> str | None:
    """The drift monitor's checks of one version's reference data (``monitor_for_deployment``'s)."""
    from ferryman.drift import DriftConfig, DriftMonitor, add_model_version, load_reference
    from ferryman.store import fetch, redact

    if len(model.signature.inputs) != 1 or len(model.signature.inputs[0].shape) != 2:
        return None  # serving does not monitor such a version (it logs a warning): nothing to check
    assert v.reference_data is not None
    where = f"version {v.name!r} reference data ({redact(v.reference_data)})"
    try:
        path = fetch(v.reference_data, cache_dir=cache_dir)
    except ModelStoreError as err:
        return f"{where}: {err}"
    try:
        reference, names = load_reference(path)
        monitor = DriftMonitor(md.name, config=DriftConfig.from_spec(md.spec.drift))  # never started
        add_model_version(monitor, model, reference, feature_names=names)
    except (FerrymanError, ValueError) as err:
        return f"{where}: {err}"
    return None
