"""Open Inference Protocol v2 codec: JSON tensors, the binary tensor extension, and precise decode errors."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from ferryman.errors import InvalidInput
from ferryman.protocol import v2
from ferryman.protocol.tensor import InferResponse, Tensor


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def fp32(shape: Any, data: Any, name: str = "x") -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape, "data": data}


def test_decode_flat_and_nested_json_give_the_same_tensor() -> None:
    rows = [[1.5, 2.0, -3.0], [4.0, 5.25, 6.0]]
    flat = v2.decode_request(body(fp32([2, 3], [v for r in rows for v in r])))
    nested = v2.decode_request(body(fp32([2, 3], rows)))
    for req in (flat, nested):
        (t,) = req.inputs
        assert (t.name, t.datatype, t.shape) == ("x", "FP32", [2, 3])
        assert t.data.dtype == np.float32
        np.testing.assert_array_equal(t.data, np.array(rows, dtype=np.float32))


def test_decode_reads_id_outputs_and_parameters() -> None:
    req = v2.decode_request(
        body(
            fp32([1], [1.0]),
            id="abc",
            parameters={"binary_data_output": True},
            outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        )
    )
    assert req.id == "abc"
    assert req.binary_output is True
    assert req.outputs is not None
    assert [(o.name, o.binary) for o in req.outputs] == [("a", True), ("b", False)]


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("INT64", [1, 2, 3], np.int64),
        ("INT32", [-1, 0, 1], np.int32),
        ("UINT8", [0, 128, 255], np.uint8),
        ("BOOL", [True, False, True], np.bool_),
        ("FP64", [0.5, 1, 2], np.float64),
        ("FP16", [0.5, 1, 2], np.float16),
        ("FP32", [1, 2, 3], np.float32),
    ],
)
def test_decode_json_datatypes(datatype: str, data: list[Any], dtype: type) -> None:
    (t,) = v2.decode_request(body({"name": "x", "datatype": datatype, "shape": [3], "data": data})).inputs
    assert t.data.dtype == dtype
    np.testing.assert_array_equal(t.data, np.array(data, dtype=dtype))


def test_decode_bytes_json() -> None:
    (t,) = v2.decode_request(
        body({"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "béta"]})
    ).inputs
    assert t.data.dtype == object
    assert list(t.data) == ["a", "béta"]


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.array([[1, -2], [3, 2**40]], dtype=np.int64),
        np.array([True, False]),
        np.arange(6, dtype=np.float64).reshape(1, 2, 3),
        np.array([7], dtype=np.uint16),
    ],
    ids=["fp32", "int64", "bool", "fp64-rank3", "uint16"],
)
def test_binary_request_round_trip(arr: np.ndarray) -> None:
    payload, header_length = v2.encode_request({"x": arr, "y": arr[::-1].copy()}, binary=True)
    assert header_length is not None
    header = orjson.loads(payload[:header_length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == arr.nbytes
    assert "data" not in header["inputs"][0]
    req = v2.decode_request(payload, header_length=header_length)
    np.testing.assert_array_equal(req.inputs[0].data, arr)
    np.testing.assert_array_equal(req.inputs[1].data, arr[::-1])
    assert req.inputs[0].data.dtype == arr.dtype


def test_binary_bytes_round_trip() -> None:
    arr = np.array([b"one", b"", "tr\xe9s".encode()], dtype=object)
    payload, header_length = v2.encode_request({"s": arr}, binary=True)
    (t,) = v2.decode_request(payload, header_length=header_length).inputs
    assert list(t.data) == list(arr)


def test_mixed_json_and_binary_inputs() -> None:
    b = np.arange(4, dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                {"name": "b", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
            ]
        }
    )
    req = v2.decode_request(header + b.tobytes(), header_length=len(header))
    np.testing.assert_array_equal(req.inputs[0].data, [1, 2])
    np.testing.assert_array_equal(req.inputs[1].data, b)


def response() -> InferResponse:
    label = np.array([1, 0, 1], dtype=np.int64)
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32)
    return InferResponse(
        model_name="m",
        model_version="v7",
        id="r1",
        outputs=[
            Tensor(name="label", datatype="INT64", shape=[3], data=label),
            Tensor(name="probabilities", datatype="FP32", shape=[3, 2], data=probs),
        ],
    )


def test_json_response_encoding() -> None:
    payload, header_length = v2.encode_response(response())
    assert header_length is None
    doc = orjson.loads(payload)
    assert doc["model_name"] == "m"
    assert doc["model_version"] == "v7"
    assert doc["id"] == "r1"
    assert doc["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 0, 1]}
    assert doc["outputs"][1]["shape"] == [3, 2]
    np.testing.assert_array_equal(
        np.array(doc["outputs"][1]["data"], dtype=np.float32), response().outputs[1].data.ravel()
    )


@pytest.mark.parametrize("binary", [{"label", "probabilities"}, {"probabilities"}, {"label"}])
def test_binary_response_round_trip(binary: set[str]) -> None:
    payload, header_length = v2.encode_response(response(), binary_names=binary)
    assert header_length is not None
    header = orjson.loads(payload[:header_length])
    for out in header["outputs"]:
        assert ("parameters" in out) == (out["name"] in binary)
        assert ("data" in out) == (out["name"] not in binary)
    decoded = v2.decode_response(payload, header_length=header_length)
    assert decoded["model_version"] == "v7"
    for got, want in zip(decoded["outputs"], response().outputs, strict=True):
        np.testing.assert_array_equal(got["data"], want.data)
        assert got["data"].dtype == want.data.dtype


def test_binary_response_with_bytes_output() -> None:
    resp = InferResponse(
        model_name="m",
        model_version="1",
        outputs=[Tensor(name="s", datatype="BYTES", shape=[2], data=np.array(["ab", "c"], dtype=object))],
    )
    payload, header_length = v2.encode_response(resp, binary_names={"s"})
    assert payload[header_length:] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    decoded = v2.decode_response(payload, header_length=header_length)
    assert list(decoded["outputs"][0]["data"]) == [b"ab", b"c"]


def rejects(payload: bytes, match: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        v2.decode_request(payload, **kwargs)
    assert match in str(info.value), str(info.value)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(b"{", "request body: malformed JSON", id="malformed-json"),
        pytest.param(b"", "request body: malformed JSON", id="empty-body"),
        pytest.param(b"\xff\xfe", "request body: malformed JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "request body: must be a JSON object", id="array-body"),
        pytest.param(b'"text"', "request body: must be a JSON object", id="string-body"),
        pytest.param(b"{}", "inputs: must be a non-empty list", id="missing-inputs"),
        pytest.param(b'{"inputs": []}', "inputs: must be a non-empty list", id="empty-inputs"),
        pytest.param(b'{"inputs": {"name": "x"}}', "inputs: must be a non-empty list", id="inputs-object"),
        pytest.param(b'{"inputs": [1]}', "inputs[0]: must be an object", id="input-not-object"),
        pytest.param(
            body({"datatype": "FP32", "shape": [1], "data": [1]}),
            "inputs[0].name: must be a non-empty",
            id="missing-name",
        ),
        pytest.param(
            body(fp32([1], [1]), fp32([1], [2])), "inputs[1].name: duplicate input 'x'", id="duplicate"
        ),
        pytest.param(
            body({"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}),
            "inputs[0] (x).datatype: unknown datatype 'FP99'",
            id="unknown-datatype",
        ),
        pytest.param(
            body({"name": "x", "shape": [1], "data": [1]}),
            "inputs[0] (x).datatype: unknown datatype None",
            id="missing-datatype",
        ),
        pytest.param(
            body(fp32([-1, 3], [1, 2, 3])),
            "inputs[0] (x).shape: must be a list of non-negative",
            id="negative-dim",
        ),
        pytest.param(body(fp32([1.5], [1])), "inputs[0] (x).shape:", id="float-dim"),
        pytest.param(body(fp32("3", [1])), "inputs[0] (x).shape:", id="shape-string"),
        pytest.param(
            body({"name": "x", "datatype": "FP32", "shape": [1]}),
            "inputs[0] (x).data: missing",
            id="missing-data",
        ),
        pytest.param(body(fp32([1], {"a": 1})), "inputs[0] (x).data: must be a list", id="data-object"),
        pytest.param(
            body(fp32([2, 3], [1, 2, 3, 4, 5])),
            "inputs[0] (x).data: 5 elements do not match shape [2, 3]",
            id="element-count",
        ),
        pytest.param(
            body(fp32([2, 2], [[1, 2], [3]])), "inputs[0] (x).data: ragged nested list", id="ragged"
        ),
        pytest.param(
            body(fp32([2, 3], [[1, 2], [3, 4], [5, 6]])),
            "inputs[0] (x).data: nested data has shape [3, 2] but shape is [2, 3]",
            id="nested-shape",
        ),
        pytest.param(
            body(fp32([2], ["a", "b"])),
            "inputs[0] (x).data: values do not fit datatype FP32",
            id="strings-as-fp32",
        ),
        pytest.param(
            body(fp32([2], [None, 1])), "inputs[0] (x).data: values do not fit datatype FP32", id="nulls"
        ),
        pytest.param(
            body({"name": "x", "datatype": "INT64", "shape": [2], "data": [1.5, 2.0]}),
            "inputs[0] (x).data: values do not fit datatype INT64",
            id="floats-as-int",
        ),
        pytest.param(
            body({"name": "x", "datatype": "BYTES", "shape": [2], "data": [1.5, 2.0]}),
            "inputs[0] (x).data: BYTES data must be strings",
            id="floats-as-bytes",
        ),
        pytest.param(
            body({"name": "x", "datatype": "BOOL", "shape": [2], "data": [1, 0]}),
            "inputs[0] (x).data: values do not fit datatype BOOL",
            id="ints-as-bool",
        ),
        pytest.param(
            body({"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}),
            "inputs[0] (x).data: values out of range for INT8",
            id="int8-overflow",
        ),
        pytest.param(
            body({"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]}),
            "inputs[0] (x).data: values out of range for UINT8",
            id="uint8-negative",
        ),
        pytest.param(
            body(fp32([1], [1e300])), "inputs[0] (x).data: values out of range for FP32", id="fp32-overflow"
        ),
        pytest.param(body(fp32([1], [1]), parameters=[1]), "parameters: must be an object", id="params-list"),
        pytest.param(
            body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 3}),
            "inputs[0] (x).parameters: must be an object",
            id="input-params",
        ),
        pytest.param(
            body(fp32([1], [1]), outputs={"name": "y"}), "outputs: must be a list", id="outputs-object"
        ),
        pytest.param(
            body(fp32([1], [1]), outputs=[{"nam": "y"}]),
            "outputs[0].name: must be a string",
            id="output-name",
        ),
        pytest.param(body(fp32([1], [1]), id=7), "id: must be a string", id="id-int"),
    ],
)
def test_json_decode_errors_say_what_and_where(payload: bytes, match: str) -> None:
    rejects(payload, match)


def test_element_limit() -> None:
    rejects(
        body(fp32([1000, 1000], [])),
        "inputs[0] (x).shape: 1000000 elements exceed the limit of 1000",
        max_elements=1000,
    )


def binary_body(arr: np.ndarray, *, size: int | None = None, datatype: str = "FP32") -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": list(arr.shape),
                    "parameters": {"binary_data_size": arr.nbytes if size is None else size},
                }
            ]
        }
    )
    return header + arr.tobytes(), len(header)


def test_binary_decode_errors() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload, hl = binary_body(arr)
    rejects(payload, "Inference-Header-Content-Length: 9999 exceeds the body length", header_length=9999)
    rejects(
        payload, "Inference-Header-Content-Length: must be a non-negative integer, got -1", header_length=-1
    )
    rejects(
        payload,
        f"Inference-Header-Content-Length ({hl - 2}): the first {hl - 2} bytes are not the JSON header: "
        "request body: malformed JSON",
        header_length=hl - 2,
    )
    rejects(
        payload[:-4], "inputs[0] (x).parameters.binary_data_size: exceeds the binary data", header_length=hl
    )
    rejects(payload + b"junk", "binary data: 4 trailing bytes not claimed by any input", header_length=hl)
    short, hl2 = binary_body(arr, size=8)
    rejects(
        short,
        "inputs[0] (x): binary_data_size 8 does not match shape [2, 3] of FP32 (24 bytes)",
        header_length=hl2,
    )
    bad, hl3 = binary_body(arr, size=-4)
    rejects(bad, "binary_data_size: must be a non-negative integer", header_length=hl3)
    # binary parameters without the header: the binary part is not there at all
    rejects(
        payload[:hl], "Inference-Header-Content-Length header is missing: inputs[0] (x) has binary_data_size"
    )


def test_binary_bytes_decode_errors() -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    )
    one = struct.pack("<I", 2) + b"ab"
    rejects(header + one + b"\x01\x00", "truncated BYTES element length", header_length=len(header))
    header2 = orjson.dumps(
        {
            "inputs": [
                {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(one)}}
            ]
        }
    )
    rejects(header2 + one, "1 BYTES elements do not match shape [2]", header_length=len(header2))
    header3 = orjson.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
    )
    rejects(header3 + struct.pack("<I", 9) + b"ab", "truncated BYTES element", header_length=len(header3))


# -- issue 18: the binary extension's header and non-finite values -----------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-3", "must be a non-negative integer"),
        ("12abc", "got '12abc'"),
        ("1_000", "must be a non-negative integer"),
        ("+12", "must be a non-negative integer"),
        ("", "must be a non-negative integer"),
        ("1" * 40, "is too large"),
    ],
)
def test_the_header_length_must_be_plain_digits(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length") as err:
        v2.parse_header_length(value)
    assert message in str(err.value)


def test_the_header_length_accepts_digits_with_surrounding_spaces() -> None:
    assert v2.parse_header_length(" 120 ") == 120


def test_a_binary_body_without_the_header_says_the_header_is_missing() -> None:
    body, hl = v2.encode_request({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, binary=True)
    assert hl is not None
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length header is missing"):
        v2.decode_request(body)
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length header is missing"):
        v2.decode_request(body[:hl])


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize(("bad", "word"), [(np.nan, "NaN"), (np.inf, "Infinity"), (-np.inf, "Infinity")])
def test_non_finite_binary_floats_are_refused_like_json_refuses_them(
    datatype: str, bad: float, word: str
) -> None:
    from ferryman.protocol.datatypes import V2_TO_NUMPY

    arr = np.array([[1.0, bad, 3.0]], dtype=V2_TO_NUMPY[datatype])
    body, hl = v2.encode_request({"x": arr}, binary=True)
    with pytest.raises(InvalidInput, match=f"{word} in {datatype} data"):
        v2.decode_request(body, header_length=hl)
    json_body = b'{"inputs": [{"name": "x", "datatype": "%s", "shape": [1, 3], "data": [1.0, %s, 3.0]}]}' % (
        datatype.encode(),
        {"NaN": b"NaN", "Infinity": b"Infinity"}[word] if bad > 0 or word == "NaN" else b"-Infinity",
    )
    with pytest.raises(InvalidInput, match="NaN and Infinity are not JSON numbers"):
        v2.decode_request(json_body)


def test_fp32_overflow_in_json_is_an_error_not_a_warning() -> None:
    import warnings

    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1e39]}]}'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInput, match="values out of range for FP32"):
            v2.decode_request(body)
