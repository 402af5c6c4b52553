"""`ferryman validate` checks what `ferryman serve` checks (issue 18): each spec below is refused by serve,
and validate now says so with the same message and exit 2; ``--schema-only`` checks only the fields."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers.models import add_one_model
from tests.helpers.servers import HOST, run_ferryman


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``y = x + 1`` over FP32 ``[-1, 3]``."""
    return add_one_model(tmp_path_factory.mktemp("validate") / "add_one.onnx")


@pytest.fixture
def http_404() -> Iterator[str]:
    """A real HTTP server that answers 404 to every path."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404, "no such model")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer((HOST, 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def spec(path: Path, versions: list[dict[str, Any]], *, drift: bool = True) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.ferryman.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "m"},
                "spec": {
                    "versions": versions,
                    "traffic": {"strategy": "static", "stable": versions[0]["name"]},
                    "drift": {"enabled": drift},
                },
            }
        )
    )
    return path


def validate(path: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    result = run_ferryman(
        ["validate", str(path), *extra], env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")}
    )
    return result.returncode, flat(result.stdout + result.stderr)


def test_a_servable_spec_is_valid(model: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.npy"
    np.save(reference, np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    code, out = validate(
        spec(
            tmp_path / "ok.yaml",
            [{"name": "v1", "uri": str(model), "sha256": sha, "referenceData": str(reference)}],
        ),
        tmp_path,
    )
    assert code == 0, out
    assert "valid ModelDeployment 'm'" in out and "model files and reference data checked" in out


def test_a_sha256_mismatch_names_the_version_and_both_hashes(model: Path, tmp_path: Path) -> None:
    wrong = "0" * 64
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    path = spec(tmp_path / "sha.yaml", [{"name": "v1", "uri": str(model), "sha256": wrong}])
    code, out = validate(path, tmp_path)
    assert code == 2, out
    assert "version 'v1'" in out and wrong in out and actual in out and "checksum mismatch" in out
    # --schema-only fetches nothing: the fields are fine
    code, out = validate(path, tmp_path, "--schema-only")
    assert code == 0 and "schema only" in out, out


def test_every_unservable_version_is_named(model: Path, tmp_path: Path, http_404: str) -> None:
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a model")
    path = spec(
        tmp_path / "bad.yaml",
        [
            {"name": "good", "uri": str(model)},
            {"name": "gone", "uri": str(tmp_path / "missing.onnx")},
            {"name": "remote", "uri": f"{http_404}/models/v1.onnx"},
            {"name": "text", "uri": str(not_onnx)},
        ],
    )
    code, out = validate(path, tmp_path)
    assert code == 2, out
    assert "version 'gone'" in out and "model file not found" in out
    assert "version 'remote'" in out and "HTTP 404" in out
    assert "version 'text'" in out and "not an ONNX model" in out
    assert "version 'good'" not in out and "3 problem(s)" in out


def test_reference_data_is_checked_like_the_drift_monitor_does(model: Path, tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.zeros((40, 5), dtype=np.float32))  # the model takes 3 columns
    path = spec(
        tmp_path / "ref.yaml",
        [
            {"name": "v1", "uri": str(model), "referenceData": str(tmp_path / "missing.npy")},
            {"name": "v2", "uri": str(model), "referenceData": str(narrow)},
        ],
    )
    code, out = validate(path, tmp_path)
    assert code == 2, out
    assert "version 'v1' reference data" in out and "missing.npy" in out
    assert "version 'v2'" in out and "reference data has 5 columns" in out and "takes 3" in out
    # with drift monitoring off, serving never reads the reference data: nothing to refuse
    code, out = validate(
        spec(
            tmp_path / "off.yaml",
            [{"name": "v1", "uri": str(model), "referenceData": str(tmp_path / "missing.npy")}],
            drift=False,
        ),
        tmp_path,
    )
    assert code == 0, out


def test_serve_refuses_what_validate_refuses(model: Path, tmp_path: Path) -> None:
    """The same message from both commands: validate runs serve's own checks."""
    path = spec(tmp_path / "sha.yaml", [{"name": "v1", "uri": str(model), "sha256": "1" * 64}])
    code, out = validate(path, tmp_path)
    served = run_ferryman(
        ["serve", str(path), "--port", "1"], env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "c")}, timeout=120
    )
    assert code == 2 and served.returncode != 0
    mismatch = "checksum mismatch (expected sha256 " + "1" * 64
    assert mismatch in out and mismatch in flat(served.stdout + served.stderr)
