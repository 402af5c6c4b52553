"""Property tests for the protocol codecs (hypothesis).

* v2 requests and responses round-trip exactly, JSON and binary, over arbitrary shapes (including 0-d and
  empty tensors) and every datatype (BOOL, the integers at their extremes, FP16/32/64, BYTES).
* Decoding arbitrary bytes, arbitrary JSON and near-valid documents never raises anything but
  ``InvalidInput`` — and neither does validating what was decoded against a model signature.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ferryman.errors import InvalidInput
from ferryman.protocol import v1, v2
from ferryman.protocol.datatypes import V2_TO_NUMPY
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.signature import Signature, TensorSpec, validate_inputs

PROPS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NUMERIC = sorted(t for t in V2_TO_NUMPY if t != "BYTES")
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def _numeric_array(datatype: str, *, finite: bool) -> st.SearchStrategy[np.ndarray]:
    dtype = V2_TO_NUMPY[datatype]
    elements = None
    if dtype.kind == "f":
        elements = hnp.from_dtype(
            dtype, allow_nan=not finite, allow_infinity=not finite, allow_subnormal=True
        )
    return hnp.arrays(dtype, SHAPES, elements=elements)


def _objects(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """An object array of exactly ``shape`` (np.array would split equal-length bytes into a 2-D array)."""
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out.reshape(shape)


def _bytes_array(*, text: bool) -> st.SearchStrategy[np.ndarray]:
    element = st.text(max_size=12) if text else st.binary(max_size=12)

    def build(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
        count = math.prod(shape)
        return st.lists(element, min_size=count, max_size=count).map(lambda xs: _objects(xs, shape))

    return SHAPES.flatmap(build)


@st.composite
def tensors(draw: st.DrawFn, *, binary: bool, finite: bool | None = None) -> dict[str, np.ndarray]:
    """1-3 named arrays of arbitrary datatypes; JSON needs finite floats and text (it has no NaN, no raw
    bytes). Requests are finite in both encodings (binary NaN/Infinity is refused like JSON's); responses may
    not be."""
    count = draw(st.integers(1, 3))
    out = {}
    for i in range(count):
        datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
        if datatype == "BYTES":
            out[f"in{i}"] = draw(_bytes_array(text=not binary))
        else:
            out[f"in{i}"] = draw(_numeric_array(datatype, finite=not binary if finite is None else finite))
    return out


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert list(got.shape) == list(want.shape)
    if want.dtype == np.object_:
        assert got.dtype == np.object_
        assert got.ravel().tolist() == want.ravel().tolist()
    elif want.dtype.kind == "f":
        assert got.dtype == want.dtype
        # bit-exact, NaN payloads and signed zeros included
        np.testing.assert_array_equal(
            got.view(f"u{want.dtype.itemsize}"), want.view(f"u{want.dtype.itemsize}")
        )
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def _decoded(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    req = v2.decode_request(body, header_length=header_length)
    return {t.name: t.data for t in req.inputs}


# -- round trips -----------------------------------------------------------------------------------------
@PROPS
@given(tensors(binary=False))
def test_v2_json_request_round_trip(inputs: dict[str, np.ndarray]) -> None:
    body, header_length = v2.encode_request(inputs)
    assert header_length is None
    got = _decoded(body, None)
    assert list(got) == list(inputs)
    for name, arr in inputs.items():
        _assert_same(got[name], arr)


@PROPS
@given(tensors(binary=True, finite=True))
def test_v2_binary_request_round_trip(inputs: dict[str, np.ndarray]) -> None:
    body, header_length = v2.encode_request(inputs, binary=True)
    assert header_length is not None
    got = _decoded(body, header_length)
    for name, arr in inputs.items():
        _assert_same(got[name], arr)


@PROPS
@given(tensors(binary=True))
def test_v2_binary_request_with_non_finite_floats_is_refused_or_exact(inputs: dict[str, np.ndarray]) -> None:
    body, header_length = v2.encode_request(inputs, binary=True)
    finite = all(a.dtype.kind != "f" or np.isfinite(a).all() for a in inputs.values())
    if finite:
        got = _decoded(body, header_length)
        for name, arr in inputs.items():
            _assert_same(got[name], arr)
    else:
        with pytest.raises(InvalidInput, match=r"(NaN|Infinity) in FP(16|32|64) data"):
            _decoded(body, header_length)


@PROPS
@given(tensors(binary=True), st.data())
def test_v2_response_round_trip(outputs: dict[str, np.ndarray], data: st.DataObject) -> None:
    """Any subset of the outputs binary, the rest JSON (only finite floats and text go as JSON)."""

    def json_safe(arr: np.ndarray) -> bool:
        if arr.dtype.kind == "f":
            return bool(np.isfinite(arr).all())
        return arr.dtype != np.object_ or all(isinstance(x, str) for x in arr.flat)

    binary = {
        n for n, a in outputs.items() if not json_safe(a) or data.draw(st.booleans(), label=f"binary {n}")
    }
    response = InferResponse(
        model_name="m",
        model_version="1",
        id="r-1",
        outputs=[v2.tensor_from_array(name, arr) for name, arr in outputs.items()],
    )
    body, header_length = v2.encode_response(response, binary_names=binary or None)
    assert (header_length is None) == (not binary)
    doc = v2.decode_response(body, header_length=header_length)
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "1", "r-1")
    got = {o["name"]: o for o in doc["outputs"]}
    for name, arr in outputs.items():
        assert got[name]["datatype"] == v2.tensor_from_array(name, arr).datatype
        value = got[name]["data"]
        if arr.dtype == np.object_ and name not in binary:
            value = _objects(value.ravel().tolist(), arr.shape)
        _assert_same(value, arr)


@PROPS
@given(tensors(binary=False), st.booleans())
def test_v2_request_metadata_round_trips(inputs: dict[str, np.ndarray], binary_output: bool) -> None:
    names = sorted(inputs)
    body, _ = v2.encode_request(inputs, request_id="id-7", binary_output=binary_output, outputs=names)
    req = v2.decode_request(body)
    assert req.id == "id-7"
    assert req.binary_output is binary_output
    assert req.outputs is not None
    assert [(o.name, o.binary) for o in req.outputs] == [(n, binary_output) for n in names]


# -- hostile input: only InvalidInput, ever -----------------------------------------------------------------
SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP32", (None, 3)), TensorSpec("s", "BYTES", (None,))),
    outputs=(TensorSpec("y", "FP32", (None, 3)),),
)
SINGLE = Signature(
    inputs=(TensorSpec("x", "INT64", (None, 2)),), outputs=(TensorSpec("y", "INT64", (None,)),)
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
nested_numbers = st.recursive(
    st.integers(-(2**65), 2**65) | st.floats(allow_nan=False) | st.booleans() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@st.composite
def near_valid_v2(draw: st.DrawFn) -> dict[str, Any]:
    """Documents shaped like v2 requests with one or more fields wrong (the interesting part of the space)."""

    def item() -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if draw(st.booleans()):
            doc["name"] = draw(st.sampled_from(["x", "s", "", "other"]) | json_values)
        if draw(st.booleans()):
            doc["datatype"] = draw(st.sampled_from([*V2_TO_NUMPY, "FP8", "bytes"]) | json_values)
        if draw(st.booleans()):
            doc["shape"] = draw(st.lists(st.integers(-2, 2**40), max_size=4) | json_values)
        if draw(st.booleans()):
            doc["data"] = draw(nested_numbers | json_values)
        if draw(st.booleans()):
            doc["parameters"] = draw(
                st.fixed_dictionaries({"binary_data_size": st.integers(-3, 64) | json_values}) | json_values
            )
        return doc

    doc: dict[str, Any] = {"inputs": [item() for _ in range(draw(st.integers(0, 3)))]}
    for key in ("id", "parameters", "outputs"):
        if draw(st.booleans()):
            doc[key] = draw(
                json_values
                | st.lists(st.fixed_dictionaries({"name": json_values, "parameters": json_values}))
            )
    return doc


def _only_invalid_input(call: Any) -> Any:
    try:
        return call()
    except InvalidInput:
        return None


def _decode_and_validate(body: bytes, header_length: int | None) -> None:
    req = _only_invalid_input(lambda: v2.decode_request(body, header_length=header_length, max_elements=4096))
    if isinstance(req, InferRequest):
        for signature in (SIGNATURE, SINGLE):
            _only_invalid_input(lambda sig=signature: validate_inputs(sig, req.inputs))


@PROPS
@given(st.binary(max_size=256), st.none() | st.integers(-4, 300))
def test_v2_decode_of_arbitrary_bytes_only_raises_invalid_input(
    body: bytes, header_length: int | None
) -> None:
    _decode_and_validate(body, header_length)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | near_valid_v2(), st.binary(max_size=64), st.booleans())
def test_v2_decode_of_arbitrary_json_only_raises_invalid_input(
    doc: Any, tail: bytes, with_binary: bool
) -> None:
    header = json.dumps(doc).encode()  # the stdlib writes integers beyond 64 bits, which orjson must refuse
    if with_binary:
        _decode_and_validate(header + tail, len(header))
    else:
        _decode_and_validate(header, None)


@PROPS
@given(
    st.binary(max_size=256)
    | json_values.map(lambda d: json.dumps(d).encode())
    | st.fixed_dictionaries({"instances": json_values}).map(lambda d: json.dumps(d).encode())
)
def test_v1_decode_only_raises_invalid_input(body: bytes) -> None:
    for signature in (SIGNATURE, SINGLE):
        req = _only_invalid_input(lambda sig=signature: v1.decode_request(body, sig))
        if isinstance(req, InferRequest):
            _only_invalid_input(lambda sig=signature, r=req: validate_inputs(sig, r.inputs))


@pytest.mark.parametrize("datatype", NUMERIC)
def test_extremes_round_trip_as_json(datatype: str) -> None:
    """The edges hypothesis may not hit every run: min and max of every type survive JSON exactly."""
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "b":
        arr = np.array([True, False])
    elif dtype.kind == "f":
        fi = np.finfo(dtype)
        arr = np.array([fi.min, fi.max, fi.tiny, -0.0, fi.eps], dtype=dtype)
    else:
        ii = np.iinfo(dtype)
        arr = np.array([ii.min, ii.max, 0], dtype=dtype)
    body, _ = v2.encode_request({"t": arr})
    _assert_same(v2.decode_request(body).inputs[0].data, arr)


def test_response_tensor_helper_covers_every_datatype() -> None:
    for datatype, dtype in V2_TO_NUMPY.items():
        arr = np.array(["a"], dtype=np.object_) if datatype == "BYTES" else np.zeros(1, dtype=dtype)
        assert isinstance(v2.tensor_from_array("t", arr), Tensor)
        assert v2.tensor_from_array("t", arr).datatype == datatype
