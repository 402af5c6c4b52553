"""KServe v1 (TF-Serving style) codec: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A single-input model takes each instance as one row of that input. A multi-input model takes each
instance as an object mapping input names to row values. With one output, each prediction is that
output's row; with several, each prediction is an object keyed by output name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ferryman.errors import InvalidInput
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.protocol.v2 import _loads
from ferryman.signature import Signature

_KIND_TO_V2 = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}
_KIND_NAMES = {
    "U": "strings",
    "S": "strings",
    "O": "mixed values (numbers with strings, objects or nulls)",
    "c": "complex numbers",
}


def _rows(values: list[Any], *, spec_dtype: str, where: str) -> Tensor:
    try:
        arr = np.asarray(values)
    except ValueError as err:
        raise InvalidInput(f"{where}: ragged instances") from err
    if spec_dtype == "BYTES":
        if arr.dtype.kind not in "US":
            raise InvalidInput(f"{where}: expected strings")
        return Tensor(name="", datatype="BYTES", shape=list(arr.shape), data=arr.astype(np.object_))
    kind = arr.dtype.kind
    if kind not in _KIND_TO_V2:
        raise InvalidInput(
            f"{where}: instances must be numbers for this model's {spec_dtype} input, got "
            f"{_KIND_NAMES.get(kind, 'values of another type')}"
        )
    return Tensor(name="", datatype=_KIND_TO_V2[kind], shape=list(arr.shape), data=arr)


def decode_request(body: bytes, signature: Signature) -> InferRequest:
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise InvalidInput("request body: must be a JSON object")
    instances = doc.get("instances")
    if instances is None and "inputs" in doc:
        instances = doc["inputs"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("instances: must be a non-empty list")
    specs = signature.inputs
    if len(specs) == 1 and not isinstance(instances[0], dict):
        t = _rows(instances, spec_dtype=specs[0].datatype, where="instances")
        t.name = specs[0].name
        tensors = [t]
    else:
        if not all(isinstance(i, dict) for i in instances):
            raise InvalidInput(
                f"instances: this model has inputs {signature.input_names}; each instance must be an object"
            )
        names = {k for i in instances for k in i}
        tensors = []
        for spec in specs:
            if spec.name not in names:
                raise InvalidInput(f"instances: missing input {spec.name!r}")
            column = []
            for n, inst in enumerate(instances):
                if spec.name not in inst:
                    raise InvalidInput(f"instances[{n}]: missing input {spec.name!r}")
                column.append(inst[spec.name])
            t = _rows(column, spec_dtype=spec.datatype, where=f"instances.{spec.name}")
            t.name = spec.name
            tensors.append(t)
        extra = names - set(signature.input_names)
        if extra:
            raise InvalidInput(f"instances: unexpected input(s) {sorted(extra)}")
    return InferRequest(inputs=tensors)


def encode_response(response: InferResponse) -> bytes:
    outs = response.outputs
    if len(outs) == 1:
        predictions: Any = outs[0].data
    else:
        n = outs[0].data.shape[0] if outs[0].data.ndim else 1
        predictions = [{t.name: t.data[i] for t in outs} for i in range(n)]
    doc = {
        "predictions": predictions,
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    raise TypeError
