"""The ONNX Runtime session every contender uses: the same options as ferryman's engine, for fairness.

One intra-op thread, sequential execution, full graph optimisation, no spinning worker threads.
"""

from __future__ import annotations

import argparse

import onnxruntime as ort


def make_session(path: str, *, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def server_args(description: str) -> argparse.Namespace:
    """The command line every contender script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model-path", required=True, help="the .onnx file")
    p.add_argument("--model-name", default="breast-cancer")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args()
    return args
