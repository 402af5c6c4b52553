"""Request bodies drawn from the sample dataset, for the three protocols ferryman speaks.

``v1`` is KServe v1 (``{"instances": ...}``), ``v2`` the Open Inference Protocol with JSON tensors and
``v2-binary`` the same with the binary tensor data extension (inputs and outputs binary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from ferryman.protocol.v2 import encode_request

PROTOCOLS = ("v2", "v2-binary", "v1")
DEFAULT_MODEL = "breast-cancer"
DEFAULT_INPUT = "input"


@dataclass(frozen=True, slots=True)
class Payload:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    rows: int = 1


def load_rows(path: str | Path) -> np.ndarray:
    """Rows of the held-out traffic set (``traffic.npy`` from ``ferryman examples export``) as float32."""
    p = Path(path)
    if p.is_dir():
        p = p / "traffic.npy"
    rows = np.load(p)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"{p}: expected a non-empty 2-D array of rows, got shape {rows.shape}")
    return np.ascontiguousarray(rows, dtype=np.float32)


def build(
    rows: np.ndarray,
    *,
    protocol: str,
    model: str = DEFAULT_MODEL,
    input_name: str = DEFAULT_INPUT,
    version: str | None = None,
) -> Payload:
    """One request carrying ``rows`` (a 2-D batch) in ``protocol``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    batch = np.ascontiguousarray(rows, dtype=np.float32)
    if batch.ndim == 1:
        batch = batch[None, :]
    pinned = f"/versions/{version}" if version else ""
    if protocol == "v1":
        body = orjson.dumps({"instances": batch}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Payload(
            "POST",
            f"/v1/models/{model}{pinned}:predict",
            body,
            {"Content-Type": "application/json"},
            rows=len(batch),
        )
    path = f"/v2/models/{model}{pinned}/infer"
    if protocol == "v2":
        body, _ = encode_request({input_name: batch})
        return Payload("POST", path, body, {"Content-Type": "application/json"}, rows=len(batch))
    body, header_length = encode_request({input_name: batch}, binary=True, binary_output=True)
    return Payload(
        "POST",
        path,
        body,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)},
        rows=len(batch),
    )


def sample(
    rows: np.ndarray,
    *,
    protocol: str,
    model: str = DEFAULT_MODEL,
    input_name: str = DEFAULT_INPUT,
    rows_per_request: int = 1,
    count: int = 64,
    seed: int = 0,
) -> list[Payload]:
    """``count`` payloads of ``rows_per_request`` rows each, drawn (with a fixed seed) from ``rows``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rows), size=(count, rows_per_request))
    return [build(rows[idx], protocol=protocol, model=model, input_name=input_name) for idx in picks]


def expected_marker(protocol: str) -> bytes:
    """A byte string every successful response body of ``protocol`` contains (a cheap sanity check)."""
    return b'"predictions"' if protocol == "v1" else b'"outputs"'
