"""Tiny ONNX models built with ``onnx.helper`` for tests that need a specific signature or a broken file.

* :func:`add_one_model` — ``y = x + 1``: FP32 input ``x`` of shape ``[-1, 3]`` (fixed second dim).
* :func:`two_input_model` — ``sum = a + b`` (FP32 ``[-1, 2]`` each) and ``prod = a * b``.
* :func:`string_identity_model` — BYTES (``tensor(string)``) ``[-1]`` in, same out.
* :func:`model_with_opset` — ``add_one_model`` declaring an arbitrary default-domain opset (e.g. 9999).
* :func:`reference_outputs` — run a model file with onnxruntime directly (the ground truth).
* :func:`slow_model` — same signature as the sample model (``input`` FP32 ``[-1, 30]`` → ``label`` INT64
  ``[-1]``, ``probabilities`` FP32 ``[-1, 2]``) whose compute really takes ~``target_seconds`` (a Loop of
  MatMuls whose trip count is calibrated on this machine at build time, on the fastest of several runs, so
  a busy machine makes it slower, never faster; the loop depends on the input, so no optimizer can fold it
  away).
* :func:`failing_model` — same signature; loads fine, but every run fails inside ONNX Runtime (a Reshape
  to an impossible shape, only discoverable at run time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, *, opset: int = OPSET) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def add_one_model(path: Path, *, opset: int = OPSET) -> Path:
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[one],
    )
    return _save(graph, path, opset=opset)


def model_with_opset(path: Path, opset: int) -> Path:
    return add_one_model(path, opset=opset)


def two_input_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    return _save(graph, path)


def string_identity_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"])],
    )
    return _save(graph, path)


def reference_outputs(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``path`` on ``feed`` computed by a plain onnxruntime session (no ferryman code)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def _sample_signature() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 30])]
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
    ]
    return inputs, outputs


def _classifier_head(logits_bias: str) -> tuple[list[onnx.NodeProto], onnx.TensorProto]:
    """``probabilities = softmax(input @ W + bias)``, ``label = argmax``; ``bias`` is a scalar tensor name."""
    w = np.random.default_rng(11).standard_normal((30, 2)).astype(np.float32) * 0.01
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["logits"]),
        helper.make_node("Add", ["logits", logits_bias], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    return nodes, helper.make_tensor("W", TensorProto.FLOAT, [30, 2], w.ravel().tolist())


def _loop_model(path: Path, trips: int, *, size: int) -> Path:
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["state_in", "A"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [size, size]),
        ],
        initializer=[helper.make_tensor("A", TensorProto.FLOAT, [size, size], a.ravel().tolist())],
    )
    head, w = _classifier_head("nothing_after")
    nodes = [
        # state0 = I + 0 * sum(input): the loop's input depends on the request, so it runs every time
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["eye", "nothing"], ["state0"]),
        helper.make_node("Loop", ["trips", "true", "state0"], ["state_final"], body=body),
        helper.make_node("ReduceSum", ["state_final"], ["loop_sum"], keepdims=0),
        helper.make_node(
            "Mul", ["loop_sum", "zero"], ["nothing_after"]
        ),  # and the answer depends on the loop
        *head,
    ]
    inputs, outputs = _sample_signature()
    graph = helper.make_graph(
        nodes,
        "slow",
        inputs,
        outputs,
        initializer=[
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("trips", TensorProto.INT64, [], [trips]),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
            helper.make_tensor(
                "eye", TensorProto.FLOAT, [size, size], np.eye(size, dtype=np.float32).ravel().tolist()
            ),
            w,
        ],
    )
    return _save(graph, path)


def _fastest_run_seconds(path: Path, *, runs: int) -> float:
    """The fastest of ``runs`` runs: the model's real cost. Other processes only ever make a run slower, so
    calibrating on the minimum keeps the built model at least as slow as asked on a busy machine."""
    import time

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # as the gateway runs it (spec.threads defaults to 1)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {"input": np.ones((1, 30), dtype=np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return min(times)


def slow_model(path: Path, *, target_seconds: float = 0.15, size: int = 128) -> Path:
    """A sample-compatible classifier whose every run takes about ``target_seconds`` of real compute."""
    probe_trips = 50
    per_trip = _fastest_run_seconds(_loop_model(path, probe_trips, size=size), runs=7) / probe_trips
    trips = int(min(max(target_seconds / max(per_trip, 1e-6), 1), 200_000))
    return _loop_model(path, trips, size=size)


def failing_model(path: Path) -> Path:
    """A sample-compatible classifier that loads but fails at run time for any batch below ~a million rows."""
    head, w = _classifier_head("impossible_sum")
    nodes = [
        helper.make_node("Reshape", ["input", "impossible_shape"], ["reshaped"]),
        helper.make_node("ReduceSum", ["reshaped"], ["impossible_sum"], keepdims=0),
        *head,
    ]
    inputs, outputs = _sample_signature()
    graph = helper.make_graph(
        nodes,
        "failing",
        inputs,
        outputs,
        initializer=[
            # 30 * rows elements never split into 1,000,003 rows (a prime) for any realistic batch
            helper.make_tensor("impossible_shape", TensorProto.INT64, [2], [1_000_003, -1]),
            w,
        ],
    )
    return _save(graph, path)
