"""Open Inference Protocol (KServe v2) codec: JSON tensors and the binary tensor data extension.

Decoding turns a request body into an :class:`InferRequest` with numpy arrays; encoding turns an
:class:`InferResponse` into a body plus the headers the binary extension needs. Every malformed input is
an :class:`InvalidInput` whose message says what is wrong and where (``inputs[1].shape: ...``).

NaN and Infinity: JSON has no such numbers (``NaN`` in a JSON body is a syntax error, named as such), and
binary FP16/FP32/FP64 tensors holding them are refused the same way, so both encodings accept exactly the
same values. docs/protocol.md is the user-facing contract.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import numpy as np
import orjson

from ferryman.errors import InvalidInput
from ferryman.protocol.datatypes import V2_TO_NUMPY, v2_datatype_of
from ferryman.protocol.tensor import InferRequest, InferResponse, RequestedOutput, Tensor

HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_NAME = "Inference-Header-Content-Length"  # as the docs and error messages spell it
MAX_HEADER_LENGTH_DIGITS = 18  # anything longer exceeds every body the limits let in
_NON_FINITE = re.compile(rb"-?(?:NaN|Infinity|nan|inf)")
_ALLOWED_KINDS = {
    "BOOL": "b",
    "FP16": "biuf",
    "FP32": "biuf",
    "FP64": "biuf",
}
_INT_KINDS = "biu"
_ORJSON_NATIVE = {
    np.dtype(t)
    for t in (
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
}


def _loads(body: bytes | str, *, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raw = body.encode() if isinstance(body, str) else body
        if _NON_FINITE.match(raw, err.pos):
            raise InvalidInput(
                f"{what}: malformed JSON at char {err.pos}: NaN and Infinity are not JSON numbers "
                "(non-finite values are not accepted, in JSON or binary tensors)"
            ) from err
        raise InvalidInput(f"{what}: malformed JSON: {err}") from err


def parse_header_length(value: str) -> int:
    """The ``Inference-Header-Content-Length`` header's value: the byte length of the JSON part of a binary
    request. Only plain decimal digits (no sign, no spaces inside, no ``1_000``)."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidInput(
            f"{HEADER_LENGTH_NAME}: must be a non-negative integer (the byte length of the JSON "
            f"header), got {value[:40]!r}"
        )
    if len(text) > MAX_HEADER_LENGTH_DIGITS:
        raise InvalidInput(f"{HEADER_LENGTH_NAME}: {text[:40]} is too large")
    return int(text)


def _undeclared_binary(body: bytes, err: InvalidInput) -> InvalidInput:
    """The error for a body that failed as plain JSON: when it is a binary request (it declares
    ``binary_data_size``) without the header, say that, not the JSON parser's view of the raw bytes."""
    if b'"binary_data_size"' in body:
        return InvalidInput(
            f"{HEADER_LENGTH_NAME} header is missing: a body with binary tensor data "
            "(binary_data_size) needs it, set to the byte length of the JSON part"
        )
    return err


class _Where:
    """An error location rendered only when an error is raised (f-strings on the hot path cost)."""

    __slots__ = ("i", "name")

    def __init__(self, i: int, name: str) -> None:
        self.i = i
        self.name = name

    def __str__(self) -> str:
        return f"inputs[{self.i}] ({self.name})"

    __format__ = lambda self, spec: str(self)  # noqa: E731


_EMPTY: dict[str, Any] = {}


def _element_count(shape: list[int]) -> int:
    return math.prod(shape)


def _count(shape: Any) -> int:
    """The element count of a valid shape (a list of non-negative ints), or -1 for anything else."""
    if type(shape) is not list:
        return -1
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return -1
        count *= d
    return count


_MISSING: Any = object()


_PACKED_FLOATS: dict[str, tuple[bytes, np.dtype]] = {
    "FP32": (b"f", np.dtype("<f4")),
    "FP64": (b"d", np.dtype("<f8")),
}


def _packed_floats(
    data: Any, *, packed: tuple[bytes, np.dtype], count: int, shape: list[int]
) -> np.ndarray | None:
    """Flat JSON numbers into FP32/FP64 in one C call, or None to take the general path.

    ``struct`` rejects anything but numbers and raises on a value FP32 cannot hold, so this needs no numpy
    dtype discovery and no ufunc pass (both cost several microseconds when the caches are cold, which on a
    server they always are). Whatever it declines, the general path decodes or reports precisely.
    """
    if type(data) is not list or len(data) != count or not count or type(data[0]) is list:
        return None
    code, dtype = packed
    try:
        raw = struct.pack(b"<%d%s" % (count, code), *data)
    except (struct.error, OverflowError):
        return None
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _json_array(data: Any, *, datatype: str, shape: list[int], where: object) -> np.ndarray:
    if type(data) is not list:
        raise InvalidInput(f"{where}.data: must be a list")
    if datatype == "BYTES":
        try:
            arr = np.array(data, dtype=np.object_)
        except ValueError as err:
            raise InvalidInput(f"{where}.data: ragged nested list") from err
        if not all(isinstance(x, str) for x in arr.flat):
            raise InvalidInput(f"{where}.data: BYTES data must be strings")
    else:
        try:
            arr = np.asarray(data)
        except ValueError as err:
            raise InvalidInput(f"{where}.data: ragged nested list") from err
        allowed = _ALLOWED_KINDS.get(datatype, _INT_KINDS)
        if arr.size and arr.dtype.kind not in allowed:
            if allowed != _INT_KINDS or arr.dtype.kind not in "fO":
                raise InvalidInput(f"{where}.data: values do not fit datatype {datatype}")
            # numpy turns [0, 2**64 - 1] into float64 (no common integer type): keep exact integers exact
            arr = _exact_integers(data, V2_TO_NUMPY[datatype], datatype=datatype, where=where)
    if arr.ndim > 1 and list(arr.shape) != shape:
        raise InvalidInput(f"{where}.data: nested data has shape {list(arr.shape)} but shape is {shape}")
    if arr.size != _element_count(shape):
        raise InvalidInput(f"{where}.data: {arr.size} elements do not match shape {shape}")
    if datatype != "BYTES":
        target = V2_TO_NUMPY[datatype]
        if target.kind in _INT_KINDS[1:] and arr.size and arr.dtype.kind in _INT_KINDS[1:]:
            info = np.iinfo(target)  # integer casts wrap around silently; refuse instead
            if arr.min() < info.min or arr.max() > info.max:
                raise InvalidInput(f"{where}.data: values out of range for {datatype}")
        if target.kind == "f":
            # JSON has no inf/nan, so an infinite result can only be an overflow of the cast
            with np.errstate(over="ignore"):  # reported below as an InvalidInput, not a RuntimeWarning
                arr = arr.astype(target, copy=False)
            if arr.dtype.itemsize < 8 and np.isinf(arr).any():
                raise InvalidInput(f"{where}.data: values out of range for {datatype}")
        else:
            try:
                with np.errstate(all="raise"):
                    arr = arr.astype(target, copy=False)
            except (OverflowError, FloatingPointError, ValueError) as err:
                raise InvalidInput(f"{where}.data: values out of range for {datatype}") from err
    return arr.reshape(shape)


def _exact_integers(data: list[Any], dtype: np.dtype, *, datatype: str, where: object) -> np.ndarray:
    """Integers numpy could not give one integer type: accept them only if all are ints that fit ``dtype``."""
    if not all(type(x) is int for x in np.array(data, dtype=np.object_).flat):
        raise InvalidInput(f"{where}.data: values do not fit datatype {datatype}")
    try:
        return np.array(data, dtype=dtype)
    except OverflowError as err:
        raise InvalidInput(f"{where}.data: values out of range for {datatype}") from err


def _binary_array(chunk: bytes, *, datatype: str, shape: list[int], where: object) -> np.ndarray:
    count = _element_count(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise InvalidInput(f"{where}: truncated BYTES element length")
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > len(chunk):
                raise InvalidInput(f"{where}: truncated BYTES element")
            items.append(chunk[pos : pos + n])
            pos += n
        if len(items) != count:
            raise InvalidInput(f"{where}: {len(items)} BYTES elements do not match shape {shape}")
        return np.array(items, dtype=np.object_).reshape(shape)
    dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"{where}: binary_data_size {len(chunk)} does not match shape {shape} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _finite_input(arr: np.ndarray, *, datatype: str, where: object) -> np.ndarray:
    """A request's binary float tensor must hold finite values only: the JSON encoding cannot carry NaN or
    Infinity, and both encodings accept the same values. (Responses may carry them: a model's output is
    reported as it is.)"""
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Infinity"
        raise InvalidInput(
            f"{where}: {bad} in {datatype} data: non-finite values are not accepted (JSON cannot "
            "carry them either)"
        )
    return arr


def decode_request(
    body: bytes, *, header_length: int | None = None, max_elements: int | None = None
) -> InferRequest:
    """Decode a v2 infer request. ``header_length`` is the Inference-Header-Content-Length value, if any."""
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length < 0:
            raise InvalidInput(f"{HEADER_LENGTH_NAME}: must be a non-negative integer, got {header_length}")
        if header_length > len(body):
            raise InvalidInput(f"{HEADER_LENGTH_NAME}: {header_length} exceeds the body length {len(body)}")
        header, binary = body[:header_length], body[header_length:]
    try:
        doc = _loads(header)
    except InvalidInput as err:
        if header_length is None:
            raise _undeclared_binary(body, err) from err
        raise InvalidInput(
            f"{HEADER_LENGTH_NAME} ({header_length}): the first {header_length} bytes are not the "
            f"JSON header: {err}"
        ) from err
    if not isinstance(doc, dict):
        raise InvalidInput("request body: must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inputs: must be a non-empty list")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, item in enumerate(raw_inputs):
        if type(item) is not dict:
            raise InvalidInput(f"inputs[{i}]: must be an object")
        name = item.get("name")
        if type(name) is not str or not name:
            raise InvalidInput(f"inputs[{i}].name: must be a non-empty string")
        if name in seen:
            raise InvalidInput(f"inputs[{i}].name: duplicate input {name!r}")
        seen.add(name)
        datatype = item.get("datatype")
        if type(datatype) is not str or datatype not in V2_TO_NUMPY:  # a list or an object is unhashable
            raise InvalidInput(f"{_Where(i, name)}.datatype: unknown datatype {datatype!r}")
        shape: list[int] = item.get("shape")  # type: ignore[assignment]  # checked by _count
        count = _count(shape)
        if count < 0:
            raise InvalidInput(f"{_Where(i, name)}.shape: must be a list of non-negative integers")
        if max_elements is not None and count > max_elements:
            raise InvalidInput(
                f"{_Where(i, name)}.shape: {count} elements exceed the limit of {max_elements}"
            )
        params = item.get("parameters")
        size = None
        if params is not None:
            if type(params) is not dict:
                raise InvalidInput(f"{_Where(i, name)}.parameters: must be an object")
            size = params.get("binary_data_size")
        if size is not None:
            where = _Where(i, name)
            if type(size) is not int or size < 0:
                raise InvalidInput(f"{where}.parameters.binary_data_size: must be a non-negative integer")
            if offset + size > len(binary):
                if header_length is None:
                    raise InvalidInput(
                        f"{HEADER_LENGTH_NAME} header is missing: {where} has binary_data_size, "
                        "so the body needs the header, set to the byte length of the JSON part"
                    )
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size: exceeds the binary data in the body"
                )
            arr = _finite_input(
                _binary_array(binary[offset : offset + size], datatype=datatype, shape=shape, where=where),
                datatype=datatype,
                where=where,
            )
            offset += size
        else:
            data = item.get("data", _MISSING)
            packed = _PACKED_FLOATS.get(datatype)
            fast = None if packed is None else _packed_floats(data, packed=packed, count=count, shape=shape)
            if fast is not None:
                arr = fast
            elif data is _MISSING:
                raise InvalidInput(f"{_Where(i, name)}.data: missing (and no binary_data_size)")
            else:
                arr = _json_array(data, datatype=datatype, shape=shape, where=_Where(i, name))
        inputs.append(Tensor(name, datatype, shape, arr))
    if offset != len(binary):
        raise InvalidInput(f"binary data: {len(binary) - offset} trailing bytes not claimed by any input")
    if len(doc) == 1:  # only "inputs": nothing else to read
        return InferRequest(inputs=inputs)
    req_params = doc.get("parameters") or {}
    if not isinstance(req_params, dict):
        raise InvalidInput("parameters: must be an object")
    binary_output = bool(req_params.get("binary_data_output", False))
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("outputs: must be a list")
        outputs = []
        for j, o in enumerate(raw_outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidInput(f"outputs[{j}].name: must be a string")
            oparams = o.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise InvalidInput(f"outputs[{j}].parameters: must be an object")
            outputs.append(
                RequestedOutput(name=o["name"], binary=bool(oparams.get("binary_data", binary_output)))
            )
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("id: must be a string")
    return InferRequest(
        inputs=inputs, id=rid, outputs=outputs, binary_output=binary_output, parameters=req_params
    )


def _bytes_payload(arr: np.ndarray) -> bytes:
    parts = []
    for x in arr.ravel():
        b = x if isinstance(x, bytes) else str(x).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def _json_data(arr: np.ndarray) -> Any:
    if arr.dtype in _ORJSON_NATIVE:
        return arr.ravel()  # C order: contiguous, which orjson needs
    if arr.dtype.kind in ("O", "S", "U"):
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.ravel()]
    return arr.ravel().tolist()


def encode_response(
    response: InferResponse, *, binary_names: set[str] | None = None
) -> tuple[bytes, int | None]:
    """Return (body, header_length). header_length is None when nothing is binary (plain JSON body)."""
    outputs = []
    chunks: list[bytes] = []
    for t in response.outputs:
        arr = t.data
        if not binary_names and arr.dtype in _ORJSON_NATIVE:
            outputs.append(
                {"name": t.name, "datatype": t.datatype, "shape": list(arr.shape), "data": arr.ravel()}
            )
            continue
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(arr.shape)}
        if binary_names and t.name in binary_names:
            raw = (
                _bytes_payload(arr)
                if t.datatype == "BYTES"
                else np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            )
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = _json_data(arr)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def decode_response(body: bytes, *, header_length: int | None = None) -> dict[str, Any]:
    """Decode a v2 response (JSON or binary) into a dict whose outputs carry numpy arrays in ``data``.

    Used by the gateway's shadow comparison, the load tests and the test suite.
    """
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    doc = _loads(header, what="response body")
    offset = 0
    for out in doc.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out["data"] = np.array(out["data"], dtype=V2_TO_NUMPY[out["datatype"]]).reshape(out["shape"])
        else:
            out["data"] = _binary_array(
                binary[offset : offset + size],
                datatype=out["datatype"],
                shape=out["shape"],
                where=out["name"],
            )
            offset += size
    return doc


def tensor_from_array(name: str, arr: np.ndarray) -> Tensor:
    return Tensor(name=name, datatype=v2_datatype_of(arr), shape=list(arr.shape), data=arr)


def encode_request(
    inputs: dict[str, np.ndarray],
    *,
    binary: bool = False,
    binary_output: bool = False,
    request_id: str | None = None,
    outputs: list[str] | None = None,
) -> tuple[bytes, int | None]:
    """Client-side helper: build a v2 request body (used by the gateway, load tests and tests)."""
    items = []
    chunks: list[bytes] = []
    for name, arr in inputs.items():
        dt = v2_datatype_of(arr)
        item: dict[str, Any] = {"name": name, "datatype": dt, "shape": list(arr.shape)}
        if binary:
            raw = (
                _bytes_payload(arr)
                if dt == "BYTES"
                else np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            )
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = _json_data(arr)
        items.append(item)
    doc: dict[str, Any] = {"inputs": items}
    if request_id is not None:
        doc["id"] = request_id
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary_output}} for o in outputs]
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
