"""Open Inference Protocol datatypes, their numpy and ONNX equivalents, and the cast policy.

Cast policy: a request tensor's declared datatype must be the model input's datatype or castable to it
under numpy's ``same_kind`` rule (e.g. FP64 -> FP32, INT32 -> INT64, INT64 -> FP32, BOOL -> anything
numeric). Narrowing across kinds (FP32 -> INT64) and anything to or from BYTES is rejected with a 400.
KServe v1 ``instances`` carry no datatype: values are converted to the model's input type with the same
``same_kind`` rule applied to the type JSON produced (ints, floats, bools).
"""

from __future__ import annotations

import numpy as np

V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}
NUMPY_TO_V2[np.dtype("U")] = "BYTES"

ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def v2_datatype_of(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind in ("U", "S", "O"):
        return "BYTES"
    return NUMPY_TO_V2[array.dtype]


def can_cast(src: str, dst: str) -> bool:
    """Whether a tensor declared as ``src`` may be fed to an input of type ``dst``."""
    if src == dst:
        return True
    if "BYTES" in (src, dst):
        return False
    return bool(np.can_cast(V2_TO_NUMPY[src], V2_TO_NUMPY[dst], casting="same_kind"))
