"""KServe v1 codec: instances in, predictions out, for single- and multi-input models."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from ferryman.errors import InvalidInput
from ferryman.protocol import v1
from ferryman.protocol.tensor import InferResponse, Tensor
from ferryman.signature import Signature, TensorSpec

ONE_INPUT = Signature(
    inputs=(TensorSpec("input", "FP32", (None, 3)),), outputs=(TensorSpec("y", "FP32", (None, 3)),)
)
TWO_INPUTS = Signature(
    inputs=(TensorSpec("a", "FP32", (None, 2)), TensorSpec("b", "INT64", (None,))),
    outputs=(TensorSpec("y", "FP32", (None,)),),
)
STRINGS = Signature(
    inputs=(TensorSpec("text", "BYTES", (None,)),), outputs=(TensorSpec("same", "BYTES", (None,)),)
)


def decode(doc: Any, signature: Signature = ONE_INPUT) -> list[Tensor]:
    return v1.decode_request(orjson.dumps(doc), signature).inputs


def test_single_input_rows() -> None:
    (t,) = decode({"instances": [[1, 2, 3], [4.5, 5, 6]]})
    assert t.name == "input"
    assert t.shape == [2, 3]
    assert t.datatype == "FP64"  # JSON numbers; the signature check casts to the model's FP32
    np.testing.assert_array_equal(t.data, [[1, 2, 3], [4.5, 5, 6]])


def test_integers_and_bools_keep_their_kind() -> None:
    (t,) = decode({"instances": [[1, 2, 3]]})
    assert t.datatype == "INT64"
    (t,) = decode({"instances": [[True, False, True]]})
    assert t.datatype == "BOOL"


def test_inputs_key_is_accepted_as_an_alias() -> None:
    (t,) = decode({"inputs": [[1.0, 2.0, 3.0]]})
    np.testing.assert_array_equal(t.data, [[1, 2, 3]])


def test_multi_input_objects() -> None:
    a, b = decode({"instances": [{"a": [1.0, 2.0], "b": 3}, {"b": 4, "a": [5.0, 6.0]}]}, TWO_INPUTS)
    assert (a.name, b.name) == ("a", "b")
    np.testing.assert_array_equal(a.data, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(b.data, [3, 4])


def test_single_input_object_instances() -> None:
    (t,) = decode({"instances": [{"input": [1.0, 2.0, 3.0]}]})
    np.testing.assert_array_equal(t.data, [[1, 2, 3]])


def test_strings() -> None:
    (t,) = decode({"instances": ["a", "b"]}, STRINGS)
    assert t.datatype == "BYTES"
    assert list(t.data) == ["a", "b"]


@pytest.mark.parametrize(
    ("doc", "signature", "match"),
    [
        pytest.param([1, 2], ONE_INPUT, "request body: must be a JSON object", id="array-body"),
        pytest.param({}, ONE_INPUT, "instances: must be a non-empty list", id="missing"),
        pytest.param({"instances": []}, ONE_INPUT, "instances: must be a non-empty list", id="empty"),
        pytest.param({"instances": "x"}, ONE_INPUT, "instances: must be a non-empty list", id="string"),
        pytest.param({"instances": [[1, 2, 3], [1]]}, ONE_INPUT, "instances: ragged instances", id="ragged"),
        pytest.param(
            {"instances": [["a", "b", "c"]]},
            ONE_INPUT,
            "instances: instances must be numbers",
            id="strings-for-numbers",
        ),
        pytest.param(
            {"instances": [[None, 1, 2]]}, ONE_INPUT, "instances: instances must be numbers", id="nulls"
        ),
        pytest.param(
            {"instances": [[1, 2]]}, STRINGS, "instances: expected strings", id="numbers-for-strings"
        ),
        pytest.param(
            {"instances": [[1.0, 2.0], [3.0, 4.0]]},
            TWO_INPUTS,
            "each instance must be an object",
            id="rows-for-multi-input",
        ),
        pytest.param(
            {"instances": [{"a": [1.0, 2.0]}]}, TWO_INPUTS, "instances: missing input 'b'", id="missing-input"
        ),
        pytest.param(
            {"instances": [{"a": [1.0, 2.0], "b": 1}, {"a": [1.0, 2.0]}]},
            TWO_INPUTS,
            "instances[1]: missing input 'b'",
            id="missing-in-one-instance",
        ),
        pytest.param(
            {"instances": [{"a": [1.0, 2.0], "b": 1, "c": 2}]},
            TWO_INPUTS,
            "instances: unexpected input(s) ['c']",
            id="extra-input",
        ),
        pytest.param(
            {"instances": [{"a": [1.0, 2.0], "b": 1}, [1.0]]},
            TWO_INPUTS,
            "each instance must be an object",
            id="mixed",
        ),
    ],
)
def test_decode_errors(doc: Any, signature: Signature, match: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(doc, signature)
    assert match in str(info.value)


def test_malformed_json() -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        v1.decode_request(b"{nope", ONE_INPUT)


def test_single_output_predictions_are_rows() -> None:
    resp = InferResponse(
        model_name="m",
        model_version="v2",
        outputs=[
            Tensor(name="y", datatype="FP32", shape=[2, 2], data=np.array([[1, 2], [3, 4]], dtype=np.float32))
        ],
    )
    doc = orjson.loads(v1.encode_response(resp))
    assert doc == {"predictions": [[1.0, 2.0], [3.0, 4.0]], "model_name": "m", "model_version": "v2"}


def test_several_outputs_give_one_object_per_row() -> None:
    resp = InferResponse(
        model_name="m",
        model_version="v1",
        outputs=[
            Tensor(name="label", datatype="INT64", shape=[2], data=np.array([1, 0], dtype=np.int64)),
            Tensor(
                name="probabilities",
                datatype="FP32",
                shape=[2, 2],
                data=np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
            ),
        ],
    )
    doc = orjson.loads(v1.encode_response(resp))
    assert doc["predictions"] == [
        {"label": 1, "probabilities": [0.25, 0.75]},
        {"label": 0, "probabilities": [0.5, 0.5]},
    ]
    assert doc["model_version"] == "v1"


def test_string_predictions() -> None:
    resp = InferResponse(
        model_name="m",
        model_version="1",
        outputs=[Tensor(name="same", datatype="BYTES", shape=[2], data=np.array(["a", "b"], dtype=object))],
    )
    assert orjson.loads(v1.encode_response(resp))["predictions"] == ["a", "b"]
