"""docs/protocol.md's gRPC example runs as written with tritonclient against ``ferryman serve --grpc-port``,
and its answers are ONNX Runtime's own for the same rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port
from tests.helpers.servers import serve_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _block(section: str) -> str:
    text = DOC.read_text()
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, text.index(section))
    assert match is not None, f"no python block after {section!r}"
    return match.group(1)


def test_the_tritonclient_example(sample_spec: Path, sample_models, tmp_path: Path) -> None:
    port = free_port()
    code = _block("### tritonclient").replace("localhost:8081", f"127.0.0.1:{port}")
    with serve_cli(
        sample_spec, args=["--grpc-port", str(port)], env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")}
    ):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=dict(os.environ),
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['v1', 'v2'] [('input', 'FP32', ['-1', '30'])]", lines
    x = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    want = reference_outputs(Path(sample_models.versions["v1"]), {"input": x})["label"]
    assert lines[1] == f"v1 {want.tolist()}", lines
    assert lines[2] == "v2"
    assert lines[3] == (
        "StatusCode.INVALID_ARGUMENT input 'input': dimension 1 is 5 but the model requires 30 "
        "(expected shape [-1, 30])"
    ), lines
