"""ModelInferRequest ⇄ InferRequest/InferResponse (typed and raw contents), its precise errors, a fuzz of
the message fields (only InvalidInput or a request, never another exception), and the one status table."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import errors
from ferryman.errors import InvalidInput
from ferryman.protocol.tensor import InferResponse, Tensor
from ferryman_runtimes.asgi.app import error_answer
from ferryman_runtimes.grpc import codec
from ferryman_runtimes.grpc import inference_pb2 as pb
from ferryman_runtimes.grpc.status import for_answer, for_error, status_code


def _request(**fields: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", **fields)  # type: ignore[arg-type]


def _raw_input(
    name: str, arr: np.ndarray, datatype: str
) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes]:
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=list(arr.shape)
    ), arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def test_raw_contents_decode_to_the_same_array() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    item, raw = _raw_input("x", x, "FP32")
    req = codec.decode_request(_request(inputs=[item], raw_input_contents=[raw], id="r1"))
    assert req.id == "r1"
    np.testing.assert_array_equal(req.inputs[0].data, x)
    assert req.inputs[0].shape == [2, 3]


def test_typed_contents_by_datatype() -> None:
    item = pb.ModelInferRequest.InferInputTensor(name="a", datatype="INT16", shape=[3])
    item.contents.int_contents.extend([1, -2, 300])
    b = pb.ModelInferRequest.InferInputTensor(name="b", datatype="BYTES", shape=[1, 2])
    b.contents.bytes_contents.extend([b"x", b"yz"])
    req = codec.decode_request(_request(inputs=[item, b]))
    assert req.inputs[0].data.dtype == np.int16
    assert req.inputs[0].data.tolist() == [1, -2, 300]
    assert req.inputs[1].data.tolist() == [[b"x", b"yz"]]


def test_bytes_raw_contents_are_length_prefixed() -> None:
    item = pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[2])
    raw = b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"
    req = codec.decode_request(_request(inputs=[item], raw_input_contents=[raw]))
    assert req.inputs[0].data.tolist() == [b"a", b"bc"]
    with pytest.raises(
        InvalidInput, match=r"raw_input_contents\[0\] \(s\): BYTES element 1 claims 2 bytes, 1 left"
    ):
        codec.decode_request(_request(inputs=[item], raw_input_contents=[raw[:-1]]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.ClearField("inputs"), r"^inputs: must be a non-empty list$"),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP8"),
            r"inputs\[0\] \(x\)\.datatype: unknown datatype 'FP8'",
        ),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), r"inputs\[0\] \(x\)\.shape: must be non-negative"),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 20),
            r"raw_input_contents\[0\] \(x\): 20 bytes, but shape \[2, 3\] of FP32 needs 24 bytes",
        ),
        (lambda r: r.raw_input_contents.append(b""), r"raw_input_contents: 2 entries for 1 inputs"),
        (
            lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
            r"inputs\[0\] \(x\)\.contents: set although",
        ),
        (
            lambda r: (r.inputs.add(name="x", datatype="FP32"), r.raw_input_contents.append(b"")),
            r"inputs\[1\]\.name: duplicate input 'x'",
        ),
        (lambda r: r.outputs.add(), r"outputs\[0\]\.name: must be a non-empty string"),
    ],
)
def test_malformed_messages_are_named_precisely(mutate, message) -> None:
    item, raw = _raw_input("x", np.zeros((2, 3), np.float32), "FP32")
    req = _request(inputs=[item], raw_input_contents=[raw])
    mutate(req)
    with pytest.raises(InvalidInput, match=message):
        codec.decode_request(req)


def test_typed_count_mismatch_names_the_field_the_datatype_takes() -> None:
    item = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 2])
    item.contents.int_contents.extend([1, 2])
    with pytest.raises(
        InvalidInput,
        match=r"0 fp32_contents elements, but shape \[1, 2\] needs 2 \(it carries "
        r"int_contents; FP32 takes fp32_contents\)",
    ):
        codec.decode_request(_request(inputs=[item]))


def test_fp16_only_raw_and_narrow_ints_range_checked_and_nan_refused() -> None:
    h = pb.ModelInferRequest.InferInputTensor(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidInput, match="FP16 has no typed contents field; send it in raw_input_contents"):
        codec.decode_request(_request(inputs=[h]))
    u = pb.ModelInferRequest.InferInputTensor(name="u", datatype="UINT8", shape=[1])
    u.contents.uint_contents.append(256)
    with pytest.raises(InvalidInput, match=r"inputs\[0\] \(u\)\.contents: values out of range for UINT8"):
        codec.decode_request(_request(inputs=[u]))
    item, raw = _raw_input("x", np.array([1.0, np.nan], np.float32), "FP32")
    with pytest.raises(InvalidInput, match="NaN in FP32 data"):
        codec.decode_request(_request(inputs=[item], raw_input_contents=[raw]))
    limit = pb.ModelInferRequest.InferInputTensor(name="big", datatype="FP32", shape=[1000, 1000])
    with pytest.raises(InvalidInput, match=r"1000000 elements exceed the limit of 10"):
        codec.decode_request(_request(inputs=[limit]), max_elements=10)


def _response() -> InferResponse:
    label = np.array([1, 0], np.int64)
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    return InferResponse(
        "m", "v2", [Tensor("label", "INT64", [2], label), Tensor("p", "FP32", [2, 2], probs)], "r9"
    )


def test_answers_in_the_requests_form() -> None:
    raw = pb.ModelInferResponse.FromString(codec.encode_response(_response(), raw=True))
    assert (raw.model_name, raw.model_version, raw.id) == ("m", "v2", "r9")
    assert [o.name for o in raw.outputs] == ["label", "p"] and list(raw.outputs[1].shape) == [2, 2]
    assert np.frombuffer(raw.raw_output_contents[1], "<f4").tolist() == [0.25, 0.75, 0.5, 0.5]
    assert not raw.outputs[0].HasField("contents")
    typed = pb.ModelInferResponse.FromString(codec.encode_response(_response(), raw=False))
    assert not typed.raw_output_contents
    assert list(typed.outputs[0].contents.int64_contents) == [1, 0]
    assert list(typed.outputs[1].contents.fp32_contents) == [0.25, 0.75, 0.5, 0.5]


def test_an_fp16_output_makes_every_output_raw() -> None:
    resp = _response()
    resp.outputs.append(Tensor("h", "FP16", [1], np.array([1.5], np.float16)))
    message = pb.ModelInferResponse.FromString(codec.encode_response(resp, raw=False))
    assert len(message.raw_output_contents) == 3
    assert np.frombuffer(message.raw_output_contents[2], "<f2").tolist() == [1.5]


_datatypes = st.sampled_from(
    ["FP32", "FP64", "FP16", "INT8", "INT64", "UINT8", "UINT64", "BOOL", "BYTES", "", "X"]
)


@st.composite
def _messages(draw: st.DrawFn) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=draw(st.text(max_size=5)), id=draw(st.text(max_size=5)))
    for _ in range(draw(st.integers(0, 3))):
        item = req.inputs.add(
            name=draw(st.sampled_from(["x", "y", ""])),
            datatype=draw(_datatypes),
            shape=draw(st.lists(st.integers(-2, 4), max_size=3)),
        )
        contents = item.contents
        contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=6)))
        contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6)))
        contents.uint64_contents.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=3)))
        contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=3)))
        contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=3)))
        if draw(st.booleans()):
            item.ClearField("contents")
    req.raw_input_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        req.outputs.add(name=draw(st.sampled_from(["label", "", "zz"])))
    if draw(st.booleans()):
        req.parameters["k"].int64_param = draw(st.integers(-5, 5))
    return req


@settings(max_examples=400, deadline=None)
@given(_messages())
def test_fuzzed_messages_decode_or_raise_invalid_input_only(message: pb.ModelInferRequest) -> None:
    try:
        req = codec.decode_request(message, max_elements=1000)
    except InvalidInput:
        return
    for t in req.inputs:
        assert list(t.data.shape) == t.shape


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_invalid_input(body: bytes) -> None:
    try:
        codec.parse(pb.ModelInferRequest, body, what="ModelInferRequest")
    except InvalidInput as err:
        assert "not a valid inference.ModelInferRequest message" in str(err)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SpecError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.VersionNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelStoreError("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.RequestTimeout("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Conflict("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InferenceFailed("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_one_table_for_raised_errors_and_rendered_answers(
    error: errors.FerrymanError, code: grpc.StatusCode
) -> None:
    assert for_error(error) == (code, "x")
    assert for_answer(*error_answer(error)) == (code, "x")  # what the shared prediction path rendered


def test_no_client_error_status_maps_to_unknown_or_internal() -> None:
    for status in range(400, 500):
        assert status_code(status) not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
