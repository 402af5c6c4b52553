"""Model signatures read from the ONNX graph, and validation of request tensors against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.protocol.datatypes import NUMPY_TO_V2, ONNX_TO_V2, V2_TO_NUMPY, can_cast
from ferryman.protocol.tensor import Tensor


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int | None, ...]  # None marks a dynamic dimension
    fixed: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)  # (axis, size) pairs

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "fixed", tuple((axis, d) for axis, d in enumerate(self.shape) if d is not None)
        )

    def to_v2(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [-1 if d is None else d for d in self.shape],
        }


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d >= 0 else None


def from_ort_session(session: Any) -> Signature:
    """Build the signature from an onnxruntime.InferenceSession (its graph inputs and outputs)."""

    def specs(nodes: Any) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                name=n.name, datatype=ONNX_TO_V2.get(n.type, n.type), shape=tuple(_dim(d) for d in n.shape)
            )
            for n in nodes
        )

    return Signature(inputs=specs(session.get_inputs()), outputs=specs(session.get_outputs()))


def validate_inputs(
    signature: Signature, tensors: list[Tensor], *, max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """Check names, datatypes (cast policy), ranks, fixed dims and (with ``max_rows``) the batch size.

    Returns the feed for ONNX Runtime.
    """
    feed: dict[str, np.ndarray] = {}
    expected = signature.inputs
    if len(tensors) == len(expected) == 1 and tensors[0].name == expected[0].name:
        pairs = [(expected[0], tensors[0])]
    else:
        by_name = {t.name: t for t in tensors}
        extra = [n for n in by_name if n not in {s.name for s in expected}]
        if extra:
            raise InvalidInput(
                f"unexpected input(s) {', '.join(map(repr, extra))}; model expects {signature.input_names}"
            )
        missing = [s.name for s in expected if s.name not in by_name]
        if missing:
            raise InvalidInput(
                f"missing input(s) {', '.join(map(repr, missing))}; model expects {signature.input_names}"
            )
        pairs = [(s, by_name[s.name]) for s in expected]
    for spec, t in pairs:
        if t.datatype != spec.datatype and not can_cast(t.datatype, spec.datatype):
            raise InvalidInput(
                f"input {spec.name!r}: datatype {t.datatype} cannot be cast to the model's {spec.datatype}"
            )
        arr = t.data
        if arr.ndim != len(spec.shape):
            raise InvalidInput(
                f"input {spec.name!r}: rank {arr.ndim} (shape {list(arr.shape)}) but the model expects rank "
                f"{len(spec.shape)} {[-1 if d is None else d for d in spec.shape]}"
            )
        for axis, want in spec.fixed:
            got = arr.shape[axis]
            if got != want:
                raise InvalidInput(
                    f"input {spec.name!r}: dimension {axis} is {got} but the model requires {want} "
                    f"(expected shape {[-1 if d is None else d for d in spec.shape]})"
                )
        if max_rows is not None and arr.ndim and arr.shape[0] > max_rows:
            raise InvalidInput(f"input {spec.name!r}: {arr.shape[0]} rows exceed the limit of {max_rows}")
        want_dtype = V2_TO_NUMPY[spec.datatype]
        if spec.datatype == "BYTES":
            arr = _strings(arr, where=f"input {spec.name!r}")
        elif arr.dtype != want_dtype:
            arr = _cast(arr, want_dtype, where=f"input {spec.name!r}")
        feed[spec.name] = arr
    return feed


def _cast(arr: np.ndarray, dtype: np.dtype, *, where: str) -> np.ndarray:
    """Cast to the model's dtype, refusing values the target cannot represent (no silent inf or
    wrap-around)."""
    if dtype.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInput(f"{where}: values out of range for the model's {NUMPY_TO_V2[dtype]}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            return arr.astype(dtype)
    except FloatingPointError as err:
        raise InvalidInput(f"{where}: values out of range for the model's {NUMPY_TO_V2[dtype]}") from err


def _strings(arr: np.ndarray, *, where: str) -> np.ndarray:
    """ONNX Runtime string tensors take ``str``; binary-encoded BYTES arrive as ``bytes`` (UTF-8 expected)."""
    if not any(isinstance(x, bytes) for x in arr.flat):
        return arr
    out = np.empty(arr.shape, dtype=np.object_)
    try:
        for i, x in enumerate(arr.flat):
            out.flat[i] = x.decode("utf-8") if isinstance(x, bytes) else x
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{where}: BYTES element is not valid UTF-8 text (position {err.start})") from err
    return out
