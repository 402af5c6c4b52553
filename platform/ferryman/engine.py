"""ONNX Runtime execution: one session per model version, explicit threading, batch-as-one-run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ferryman.errors import InferenceFailed, InvalidInput, ModelStoreError
from ferryman.signature import Signature, from_ort_session

MIN_OPSET = 7


def max_supported_opset() -> int:
    return int(onnx.defs.onnx_opset_version())


def check_onnx_file(path: Path) -> int:
    """Validate that ``path`` is an ONNX model with a supported default-domain opset; return the opset."""
    if not path.is_file():
        raise ModelStoreError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError / ValueError / google.protobuf errors
        raise ModelStoreError(f"{path}: not an ONNX model ({type(err).__name__})") from err
    if not model.graph.node and not model.graph.output:
        raise ModelStoreError(f"{path}: not an ONNX model (empty graph)")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx", 0)
    top = max_supported_opset()
    if not MIN_OPSET <= opset <= top:
        raise ModelStoreError(f"{path}: unsupported opset {opset} (supported: {MIN_OPSET}..{top})")
    return opset


@dataclass(slots=True)
class OnnxModel:
    """A loaded model version, ready to run."""

    name: str
    version: str
    path: Path
    session: ort.InferenceSession
    signature: Signature
    opset: int
    output_names: list[str] = field(default_factory=list)
    output_types: dict[str, str] = field(default_factory=dict)
    _run: Any = None  # the session's native run (skips the Python wrapper's per-call checks)

    @classmethod
    def load(cls, path: str | Path, *, name: str, version: str, threads: int = 1) -> OnnxModel:
        p = Path(path)
        opset = check_onnx_file(p)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Spinning worker threads burn the other core the gateway needs; we run one request at a time.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelStoreError(f"{p}: ONNX Runtime cannot load the model: {err}") from err
        sig = from_ort_session(session)
        return cls(
            name=name,
            version=version,
            path=p,
            session=session,
            signature=sig,
            opset=opset,
            output_names=sig.output_names,
            output_types={t.name: t.datatype for t in sig.outputs},
            _run=session._sess.run,
        )

    def run(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        return dict(zip(names, self.execute(feed, names), strict=True))

    def execute(self, feed: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Run the session for the outputs ``names``; the arrays in that order (the data plane's call)."""
        try:
            return self._run(names, feed, None)  # type: ignore[no-any-return]
        except (
            ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph,
        ) as err:
            raise InvalidInput(f"model rejected the input: {str(err).splitlines()[0][:300]}") from err
        except Exception as err:
            raise InferenceFailed(f"inference failed: {type(err).__name__}") from err
