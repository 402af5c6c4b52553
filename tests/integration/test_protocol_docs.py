"""docs/protocol.md runs as written: its binary-extension examples (curl, plain Python, KServe's REST client)
against a real `ferryman serve` of the sample spec, and the answers agree with ONNX Runtime run directly."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.servers import CliServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def block(section: str, language: str) -> str:
    """The first ``language`` code block after the heading ``section``."""
    text = DOC.read_text()
    start = text.index(section)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {section!r} in {DOC}"
    return match.group(1)


def runs(command: list[str], cwd: Path) -> str:
    """Run an example (already pointed at the test server); its stdout. ``python3`` is this venv's."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_curl_example(native_server: CliServer, tmp_path: Path) -> None:
    script = block("### curl", "bash").replace("localhost:8080", native_server.url.removeprefix("http://"))
    out = runs(["bash", "-euo", "pipefail", "-c", script], tmp_path)
    assert '"model_version":"v1"' in out and '"label"' in out, out


def test_the_python_example(native_server: CliServer, tmp_path: Path) -> None:
    code = block("### Python", "python").replace("http://localhost:8080", native_server.url)
    out = runs([sys.executable, "-c", code], tmp_path)
    assert out.startswith("v1 ") and "'label'" in out and "'probabilities'" in out, out


def test_the_kserve_client_example(native_server: CliServer, tmp_path: Path, sample_models) -> None:
    # (kserve is not imported here: its v2 gRPC stubs and tritonclient's share the symbols of package
    # ``inference``, and the gRPC tests load tritonclient into this process; the example runs in its own)
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed")
    code = block("### A standard client", "python").replace("http://localhost:8080", native_server.url)
    out = runs([sys.executable, "-c", code], tmp_path)
    model, labels = out.split(" ", 1)
    assert model == "breast-cancer", out
    # the labels the client decoded from the binary answer are ONNX Runtime's own for the same rows
    from tests.helpers.models import reference_outputs

    x = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    want = reference_outputs(Path(sample_models.versions["v1"]), {"input": x})["label"]
    assert labels.strip() == str(want), out
