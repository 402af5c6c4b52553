"""Sample models from data that ships with scikit-learn (no network), ready to serve.

``export(DIR)`` writes two versions of a gradient-boosted breast-cancer classifier (about 10 us a row: the
HTTP framing is the cost), each version's reference data for drift monitoring, a held-out traffic set for
load generation, and ``DIR/deployment.yaml`` serving them (v1 stable, v2 as canary).

``export_example(NAME, DIR)`` writes any of :data:`EXAMPLES` in the same layout; the compute-bound ones
(milliseconds a row, see :mod:`ferryman.examples_compute`) turn adaptive batching on in their spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ferryman.store import sha256_of

MODEL_NAME = "breast-cancer"
INPUT_NAME = "input"
N_FEATURES = 30


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    spec: Path
    versions: dict[str, Path]
    accuracy: dict[str, float]
    model: str = MODEL_NAME


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    batching: dict[str, Any] | None = None  # spec.batching of its deployment.yaml (None: off)


# Batching for the compute-bound examples: 32 rows a run is where the MLP's per-row cost levels off here; no
# added wait (maxDelayMs 0): under load a batch is what queued while the last run went, and a wait with rows
# queued only idles the model (docs/batching.md, measured at 8-64 connections).
COMPUTE_BATCHING = {"maxBatchSize": 32, "maxDelayMs": 0}

EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example(
            MODEL_NAME, "gradient-boosted trees on breast-cancer (30 features), ~10 us a row: HTTP-bound"
        ),
        Example(
            "digits-mlp",
            "wide MLP (3 x 2048) on the 8x8 digits (64 pixels), trained; milliseconds a row alone, "
            "a fraction of that in a batch: compute-bound",
            COMPUTE_BATCHING,
        ),
        Example(
            "digits-cnn",
            "small CNN over the 8x8 digits (64 pixels), RANDOM weights (throughput only), "
            "~0.5 ms a row: compute-bound",
            COMPUTE_BATCHING,
        ),
    )
}


def _dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=7, stratify=y
    )
    return x_train, x_test, y_train, y_test


def to_onnx(estimator: object, n_features: int = N_FEATURES) -> bytes:
    from skl2onnx import to_onnx as _to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = _to_onnx(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def export(
    directory: str | Path, *, strategy: str = "canary", interval_seconds: float = 5.0, min_requests: int = 50
) -> ExportResult:
    """The breast-cancer example (see the module docstring)."""
    from sklearn.ensemble import GradientBoostingClassifier

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = _dataset()
    configs = {
        "v1": GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.1, random_state=1),
        "v2": GradientBoostingClassifier(
            n_estimators=100, max_depth=3, learning_rate=0.08, subsample=0.9, random_state=2
        ),
    }
    paths: dict[str, Path] = {}
    accuracy: dict[str, float] = {}
    for version, est in configs.items():
        est.fit(x_train, y_train)
        accuracy[version] = float((est.predict(x_test) == y_test).mean())
        vdir = out / "models" / version
        vdir.mkdir(parents=True, exist_ok=True)
        path = vdir / "model.onnx"
        path.write_bytes(to_onnx(est))
        np.save(vdir / "reference.npy", x_train)
        paths[version] = path
    np.save(out / "traffic.npy", x_test)
    np.save(out / "traffic_labels.npy", y_test)
    spec_path = write_spec(
        out,
        MODEL_NAME,
        paths,
        strategy=strategy,
        interval_seconds=interval_seconds,
        min_requests=min_requests,
    )
    return ExportResult(directory=out, spec=spec_path, versions=paths, accuracy=accuracy)


def export_example(
    name: str,
    directory: str | Path,
    *,
    strategy: str = "canary",
    interval_seconds: float = 5.0,
    min_requests: int = 50,
) -> ExportResult:
    """Export the example ``name`` (a key of :data:`EXAMPLES`) into ``directory``, in the layout of
    :func:`export`."""
    example = EXAMPLES.get(name)
    if example is None:
        raise ValueError(f"unknown example {name!r} (examples: {', '.join(EXAMPLES)})")
    if name == MODEL_NAME:
        return export(
            directory, strategy=strategy, interval_seconds=interval_seconds, min_requests=min_requests
        )
    from ferryman.examples_compute import export_digits

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths, accuracy, _ = export_digits(out, kind=name.removeprefix("digits-"))
    spec_path = write_spec(
        out,
        name,
        paths,
        strategy=strategy,
        interval_seconds=interval_seconds,
        min_requests=min_requests,
        batching=example.batching,
    )
    return ExportResult(directory=out, spec=spec_path, versions=paths, accuracy=accuracy, model=name)


def write_spec(
    out: Path,
    name: str,
    paths: dict[str, Path],
    *,
    strategy: str,
    interval_seconds: float,
    min_requests: int,
    batching: dict[str, Any] | None = None,
) -> Path:
    """``out/deployment.yaml``: v1 stable, v2 candidate, drift on, ``spec.batching`` when given."""
    spec: dict[str, Any] = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "runtime": "native",
            "versions": [
                {
                    "name": v,
                    "uri": f"models/{v}/model.onnx",
                    "sha256": sha256_of(p),
                    "referenceData": f"models/{v}/reference.npy",
                }
                for v, p in paths.items()
            ],
            "budget": {"p99Ms": 100, "maxErrorRate": 0.01},
            "traffic": {
                "strategy": strategy,
                "stable": "v1",
                "candidate": "v2",
                "canary": {
                    "steps": [5, 25, 50, 100],
                    "intervalSeconds": interval_seconds,
                    "failureThreshold": 2,
                    "minRequests": min_requests,
                },
                "abTest": {
                    "weights": {"v1": 50, "v2": 50},
                    "sticky": {"source": "header", "name": "x-user-id"},
                },
            },
            "drift": {"enabled": True, "windowSize": 500, "everyRows": 250, "threshold": 0.5},
        },
    }
    if batching is not None:
        spec["spec"]["batching"] = dict(batching)
    spec_path = out / "deployment.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path
