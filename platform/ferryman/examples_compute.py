"""Compute-bound sample models: inference costs milliseconds per row, so server-side batching pays.

Both read scikit-learn's bundled 8x8 digits (no network) as 64 flat pixel values (``input``: FP32
``[-1, 64]``) and answer ``label`` (INT64 ``[-1]``) and ``probabilities`` (FP32 ``[-1, 10]``):

* ``digits-mlp`` — a wide multi-layer perceptron (three hidden layers of :data:`MLP_WIDTH`) trained with
  scikit-learn and exported with skl2onnx. Its 8.5 million weights (34 MB) do not fit in a 32 MB L3
  cache, so one row, a matrix-vector product per layer, streams them all from memory (2-6 ms on one core
  here); a batch of 32 is a matrix-matrix product that reads them once (a fraction of that per row).
  Training takes about 40 s of CPU.
* ``digits-cnn`` — a small convolutional network over the 8x8 image, written with the ``onnx`` helper API.
  Its weights are **random** (seeded): it is a throughput model, its labels mean nothing; its metadata
  (``weights: random``) and ``docs/batching.md`` say so.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAME = "input"
N_FEATURES = 64
N_CLASSES = 10
MLP_WIDTH = 2048
MLP_EPOCHS = 4
IR_VERSION = 8  # what every ONNX Runtime in use reads
OPSET = 17


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): the bundled digits, pixels as float32 in 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=7, stratify=y
    )
    return x_train, x_test, y_train, y_test


def mlp_onnx(x_train: np.ndarray, y_train: np.ndarray, *, seed: int) -> tuple[bytes, Any]:
    """Train the wide MLP (scaler + MLPClassifier) and export it; returns (ONNX bytes, fitted pipeline)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clf = MLPClassifier(
        hidden_layer_sizes=(MLP_WIDTH,) * 3,
        max_iter=MLP_EPOCHS,
        batch_size=128,
        learning_rate_init=1e-3,
        random_state=seed,
    )
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", clf)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs are plenty for digits
        pipe.fit(x_train, y_train)
    onx = to_onnx(
        pipe,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    onx.ir_version = min(onx.ir_version, IR_VERSION)
    _describe(onx, weights="trained (scikit-learn digits)", cost="compute-bound wide MLP")
    return onx.SerializeToString(), pipe


def cnn_onnx(*, seed: int, channels: tuple[int, int, int] = (64, 128, 128), hidden: int = 256) -> bytes:
    """A convolutional network over the 8x8 digit (random weights, seeded): 64 pixels -> [N,1,8,8] ->
    3x3 conv -> ReLU -> 3x3 conv -> ReLU -> 2x2 max-pool -> 3x3 conv -> ReLU -> dense -> ReLU -> dense ->
    softmax (``probabilities``) and arg-max (``label``)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c1, c2, c3 = channels
    inits = []

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name
            )
        )
        return name

    def bias(name: str, n: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(n) * 0.01).astype(np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array([-1, 1, 8, 8], dtype=np.int64), "image_shape"))
    inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"))
    inits.append(numpy_helper.from_array(np.array([1.0 / 16.0], dtype=np.float32), "pixel_scale"))
    flat = c3 * 4 * 4
    conv: dict[str, Any] = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Mul", [INPUT_NAME, "pixel_scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "image_shape"], ["image"]),
        helper.make_node("Conv", ["image", weight("w1", (c1, 1, 3, 3), 9), bias("b1", c1)], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "Conv", ["r1", weight("w2", (c2, c1, 3, 3), 9 * c1), bias("b2", c2)], ["c2"], **conv
        ),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv", ["p2", weight("w3", (c3, c2, 3, 3), 9 * c2), bias("b3", c3)], ["c3"], **conv
        ),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Reshape", ["r3", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", weight("w4", (flat, hidden), flat), bias("b4", hidden)], ["d4"]),
        helper.make_node("Relu", ["d4"], ["r4"]),
        helper.make_node(
            "Gemm", ["r4", weight("w5", (hidden, N_CLASSES), hidden), bias("b5", N_CLASSES)], ["logits"]
        ),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, N_CLASSES]),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="ferryman.examples_compute",
    )
    _describe(model, weights="random", cost="compute-bound CNN (throughput only: its labels mean nothing)")
    return model.SerializeToString()


def _describe(model: Any, *, weights: str, cost: str) -> None:
    from onnx import helper

    helper.set_model_props(
        model, {"weights": weights, "purpose": cost, "dataset": "sklearn.datasets.load_digits"}
    )


def export_digits(directory: Path, *, kind: str) -> tuple[dict[str, Path], dict[str, float], np.ndarray]:
    """Two versions of ``kind`` ("mlp" or "cnn") with their reference data, and the held-out traffic set.
    Returns (version -> model path, version -> test accuracy, training rows)."""
    x_train, x_test, y_train, y_test = digits()
    paths: dict[str, Path] = {}
    accuracy: dict[str, float] = {}
    for version, seed in (("v1", 1), ("v2", 2)):
        vdir = directory / "models" / version
        vdir.mkdir(parents=True, exist_ok=True)
        path = vdir / "model.onnx"
        if kind == "mlp":
            data, pipe = mlp_onnx(x_train, y_train, seed=seed)
            accuracy[version] = float((pipe.predict(x_test) == y_test).mean())
        elif kind == "cnn":
            data = cnn_onnx(seed=seed)
            accuracy[version] = float("nan")  # random weights: no accuracy to speak of
        else:
            raise ValueError(f"unknown compute-bound example kind {kind!r}")
        path.write_bytes(data)
        np.save(vdir / "reference.npy", x_train)
        paths[version] = path
    np.save(directory / "traffic.npy", x_test)
    np.save(directory / "traffic_labels.npy", y_test)
    return paths, accuracy, x_train
