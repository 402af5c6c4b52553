"""Signatures read from real ONNX Runtime sessions, the cast policy, and request validation against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ferryman.errors import InvalidInput
from ferryman.protocol.datatypes import can_cast, v2_datatype_of
from ferryman.protocol.tensor import Tensor
from ferryman.signature import Signature, TensorSpec, from_ort_session, validate_inputs


def signature_of(path: Path) -> Signature:
    return from_ort_session(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


def tensor(name: str, arr: np.ndarray, datatype: str | None = None) -> Tensor:
    return Tensor(name=name, datatype=datatype or v2_datatype_of(arr), shape=list(arr.shape), data=arr)


def test_signature_from_session(tiny_models: dict[str, Path]) -> None:
    sig = signature_of(tiny_models["add_one"])
    assert sig.inputs == (TensorSpec("x", "FP32", (None, 3)),)
    assert sig.outputs == (TensorSpec("y", "FP32", (None, 3)),)
    assert sig.input("x").to_v2() == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
    with pytest.raises(KeyError):
        sig.input("nope")
    two = signature_of(tiny_models["two_inputs"])
    assert two.input_names == ["a", "b"]
    assert two.output_names == ["sum", "prod"]
    assert signature_of(tiny_models["strings"]).inputs[0].datatype == "BYTES"


def test_signature_of_the_sample_model(sample_models) -> None:
    sig = signature_of(sample_models.versions["v1"])
    assert [t.to_v2() for t in sig.inputs] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert [t.to_v2() for t in sig.outputs] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        ("FP32", "FP32", True),
        ("FP64", "FP32", True),
        ("FP16", "FP32", True),
        ("INT64", "FP32", True),
        ("INT32", "INT64", True),
        ("BOOL", "FP32", True),
        ("UINT8", "INT64", True),
        ("FP32", "INT64", False),
        ("FP64", "INT32", False),
        ("BYTES", "FP32", False),
        ("FP32", "BYTES", False),
        ("INT64", "BOOL", False),
        ("BYTES", "BYTES", True),
    ],
)
def test_cast_policy(src: str, dst: str, ok: bool) -> None:
    assert can_cast(src, dst) is ok


ADD_ONE = Signature(
    inputs=(TensorSpec("x", "FP32", (None, 3)),), outputs=(TensorSpec("y", "FP32", (None, 3)),)
)
TWO = Signature(
    inputs=(TensorSpec("a", "FP32", (None, 2)), TensorSpec("b", "INT64", (None,))),
    outputs=(TensorSpec("y", "FP32", (None,)),),
)


def test_valid_input_is_cast_to_the_model_dtype() -> None:
    feed = validate_inputs(ADD_ONE, [tensor("x", np.ones((4, 3), dtype=np.float64))])
    assert feed["x"].dtype == np.float32
    assert feed["x"].shape == (4, 3)
    feed = validate_inputs(ADD_ONE, [tensor("x", np.arange(3, dtype=np.int64).reshape(1, 3))])
    np.testing.assert_array_equal(feed["x"], [[0, 1, 2]])
    assert feed["x"].dtype == np.float32


def test_multi_input_feed_in_model_order() -> None:
    feed = validate_inputs(
        TWO, [tensor("b", np.array([1, 2], dtype=np.int32)), tensor("a", np.zeros((2, 2), dtype=np.float32))]
    )
    assert list(feed) == ["a", "b"]
    assert feed["b"].dtype == np.int64


@pytest.mark.parametrize(
    ("signature", "tensors", "match"),
    [
        pytest.param(
            TWO,
            [tensor("a", np.ones((1, 2), dtype=np.float32)), tensor("b", np.ones(1, dtype=np.float32))],
            "input 'b': datatype FP32 cannot be cast to the model's INT64",
            id="fp32-to-int64",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("x", np.array(["a", "b", "c"], dtype=object).reshape(1, 3))],
            "input 'x': datatype BYTES cannot be cast",
            id="bytes",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("x", np.ones(3, dtype=np.float32))],
            "input 'x': rank 1 (shape [3]) but the model expects rank 2 [-1, 3]",
            id="rank",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("x", np.ones((2, 4), dtype=np.float32))],
            "input 'x': dimension 1 is 4 but the model requires 3",
            id="fixed-dim",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("z", np.ones((2, 3), dtype=np.float32))],
            "unexpected input(s) 'z'; model expects ['x']",
            id="wrong-name",
        ),
        pytest.param(
            TWO,
            [tensor("a", np.ones((1, 2), dtype=np.float32))],
            "missing input(s) 'b'; model expects ['a', 'b']",
            id="missing",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("x", np.ones((1, 3), dtype=np.float32)), tensor("extra", np.ones(1, dtype=np.float32))],
            "unexpected input(s) 'extra'",
            id="extra",
        ),
        pytest.param(
            ADD_ONE,
            [tensor("x", np.full((1, 3), 1e300))],
            "input 'x': values out of range for the model's FP32",
            id="fp64-overflow",
        ),
        pytest.param(
            TWO,
            [tensor("a", np.ones((1, 2), dtype=np.float32)), tensor("b", np.array([2**63], dtype=np.uint64))],
            "input 'b': values out of range for the model's INT64",
            id="uint64-overflow",
        ),
    ],
)
def test_validation_errors(signature: Signature, tensors: list[Tensor], match: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(signature, tensors)
    assert match in str(info.value)


STRINGS = Signature(
    inputs=(TensorSpec("text", "BYTES", (None,)),), outputs=(TensorSpec("same", "BYTES", (None,)),)
)


def test_binary_bytes_are_fed_as_text() -> None:
    raw = np.array([b"ferry", "\u00fcn".encode()], dtype=object)
    feed = validate_inputs(STRINGS, [tensor("text", raw, "BYTES")])
    assert list(feed["text"]) == ["ferry", "\u00fcn"]


def test_bytes_that_are_not_utf8_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="input 'text': BYTES element is not valid UTF-8"):
        validate_inputs(STRINGS, [tensor("text", np.array([b"\xff\xfe"], dtype=object), "BYTES")])
