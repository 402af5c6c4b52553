"""``inference.ModelInferRequest`` ⇄ the data plane's :class:`InferRequest` / :class:`InferResponse`.

Pure conversion, no gRPC import. Every malformed message is an :class:`InvalidInput` naming the field
(``inputs[0] (x).shape: ...``, ``raw_input_contents[1] (y): 12 bytes, but shape [1, 4] of FP32 needs 16``);
the servicer turns it into ``INVALID_ARGUMENT``. The values accepted are the REST contract's: NaN and
Infinity are refused in FP16/FP32/FP64 inputs, whichever form carries them (docs/protocol.md).

Typed ``contents`` take the repeated field of the tensor's datatype (INT8/16/32 ``int_contents``, UINT8/16/32
``uint_contents``, ...); FP16 travels only as raw contents. The answer uses the request's form: raw outputs
(``raw_output_contents``) when the request used ``raw_input_contents`` (``tritonclient.grpc`` does), typed
contents otherwise — unless an output is FP16, which only the raw form carries (then every output is raw,
as the protocol requires).
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message

from ferryman.errors import InvalidInput
from ferryman.protocol.datatypes import V2_TO_NUMPY
from ferryman.protocol.tensor import InferRequest, InferResponse, RequestedOutput, Tensor
from ferryman_runtimes.grpc import inference_pb2 as pb

# datatype -> the InferTensorContents field that carries it
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_NARROW = {"INT8", "INT16", "UINT8", "UINT16"}  # carried in 32-bit fields: range-checked
# datatype -> its little-endian numpy dtype (raw contents are little-endian whatever the machine)
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}
_NATIVE_LITTLE = sys.byteorder == "little"


def parse(message: type[Message], body: bytes, *, what: str) -> Any:
    """``body`` parsed as ``message``; a body that is not one is the caller's error."""
    try:
        return message.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise InvalidInput(f"{what}: not a valid {message.DESCRIPTOR.full_name} message ({err})") from err


def parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain values (an unset parameter is None)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def uses_raw(request: Any) -> bool:
    return len(request.raw_input_contents) > 0


def decode_request(request: Any, *, max_elements: int | None = None) -> InferRequest:
    """A parsed ``ModelInferRequest`` as the data plane's request (raises :class:`InvalidInput`)."""
    inputs = request.inputs
    if not inputs:
        raise InvalidInput("inputs: must be a non-empty list")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents: {len(raw)} entries for {len(inputs)} inputs (one per input, "
            "in the order of inputs)"
        )
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i, item in enumerate(inputs):
        name = item.name
        if not name:
            raise InvalidInput(f"inputs[{i}].name: must be a non-empty string")
        if name in seen:
            raise InvalidInput(f"inputs[{i}].name: duplicate input {name!r}")
        seen.add(name)
        where = f"inputs[{i}] ({name})"
        datatype = item.datatype
        if datatype not in V2_TO_NUMPY:
            raise InvalidInput(f"{where}.datatype: unknown datatype {datatype[:40]!r}")
        shape = list(item.shape)
        if shape and min(shape) < 0:
            raise InvalidInput(f"{where}.shape: must be non-negative integers, got {shape[:16]}")
        count = math.prod(shape)
        if max_elements is not None and count > max_elements:
            raise InvalidInput(f"{where}.shape: {count} elements exceed the limit of {max_elements}")
        if raw:
            if item.HasField("contents"):
                raise InvalidInput(
                    f"{where}.contents: set although the request uses raw_input_contents (use one "
                    "form for every input)"
                )
            arr = raw_array(raw[i], datatype=datatype, shape=shape, where=f"raw_input_contents[{i}] ({name})")
        else:
            arr = typed_array(item, datatype=datatype, shape=shape, count=count, where=where)
        tensors.append(Tensor(name, datatype, shape, _finite(arr, datatype=datatype, where=where)))
    outputs = None
    if request.outputs:
        outputs = []
        for j, o in enumerate(request.outputs):
            if not o.name:
                raise InvalidInput(f"outputs[{j}].name: must be a non-empty string")
            outputs.append(RequestedOutput(o.name))
    return InferRequest(
        inputs=tensors,
        id=request.id or None,
        outputs=outputs,
        parameters=parameters(request.parameters) if request.parameters else {},
    )


def raw_array(chunk: bytes, *, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """One raw tensor: row-major little-endian elements; BYTES as 4-byte little-endian lengths + bytes."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        pos, end = 0, len(chunk)
        while pos < end:
            if pos + 4 > end:
                raise InvalidInput(f"{where}: truncated BYTES element length at byte {pos}")
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > end:
                raise InvalidInput(f"{where}: BYTES element {len(items)} claims {n} bytes, {end - pos} left")
            items.append(chunk[pos : pos + n])
            pos += n
        if len(items) != count:
            raise InvalidInput(f"{where}: {len(items)} BYTES elements, but shape {shape} needs {count}")
        return np.array(items, dtype=np.object_).reshape(shape)
    dtype = _LITTLE[datatype]
    need = count * dtype.itemsize
    if len(chunk) != need:
        raise InvalidInput(
            f"{where}: {len(chunk)} bytes, but shape {shape} of {datatype} needs {need} bytes "
            f"({count} elements of {dtype.itemsize})"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def typed_array(item: Any, *, datatype: str, shape: list[int], count: int, where: str) -> np.ndarray:
    """One typed tensor from ``contents``: the repeated field of its datatype."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:  # FP16: no typed field exists
        raise InvalidInput(f"{where}: {datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(item.contents, field)
    if len(values) != count:
        others = [
            f for f in sorted(set(CONTENTS_FIELD.values())) if f != field and len(getattr(item.contents, f))
        ]
        hint = f" (it carries {', '.join(others)}; {datatype} takes {field})" if others else ""
        raise InvalidInput(
            f"{where}.contents: {len(values)} {field} elements, but shape {shape} needs {count}{hint}"
        )
    target = V2_TO_NUMPY[datatype]
    if datatype == "BYTES":
        return np.array(list(values), dtype=np.object_).reshape(shape)
    if datatype in _NARROW and count:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(target)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"{where}.contents: values out of range for {datatype}")
        return wide.astype(target).reshape(shape)
    return np.array(values, dtype=target).reshape(shape)


def _finite(arr: np.ndarray, *, datatype: str, where: str) -> np.ndarray:
    if arr.dtype.kind == "f" and arr.size and not np.logical_and.reduce(np.isfinite(arr), axis=None):
        bad = "NaN" if np.isnan(arr).any() else "Infinity"
        raise InvalidInput(
            f"{where}: {bad} in {datatype} data: non-finite values are not accepted (the REST "
            "contract's rule, whichever form carries them)"
        )
    return arr


def _raw_bytes(t: Tensor) -> bytes:
    arr = t.data
    if t.datatype == "BYTES":
        parts = []
        for x in arr.ravel():
            b = x if isinstance(x, bytes) else str(x).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    if _NATIVE_LITTLE and arr.dtype.byteorder != ">":
        return arr.tobytes()  # C order, whatever the array's layout
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _typed_values(t: Tensor) -> list[Any]:
    flat = t.data.ravel()
    if t.datatype == "BYTES":
        return [x if isinstance(x, bytes) else str(x).encode() for x in flat]
    return flat.tolist()  # type: ignore[no-any-return]


def encode_response(response: InferResponse, *, raw: bool) -> bytes:
    """The serialized ``ModelInferResponse``: raw outputs when ``raw`` (or an output is FP16), else typed."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    raw = raw or any(t.datatype not in CONTENTS_FIELD for t in response.outputs)
    for t in response.outputs:
        out = message.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.data.shape))
        if raw:
            message.raw_output_contents.append(_raw_bytes(t))
        else:
            getattr(out.contents, CONTENTS_FIELD[t.datatype]).extend(_typed_values(t))
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    return message.SerializeToString()  # type: ignore[no-any-return]


def _set_parameter(param: Any, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    else:
        param.string_param = str(value)
