"""The CLI end to end: ``ferryman examples export``, ``ferryman validate`` and ``ferryman serve``, including
serve refusing to start (non-zero exit, clear message, port never opened) when a version cannot load.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from ferryman.protocol import v2
from ferryman.spec import load_deployment
from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port
from tests.helpers.servers import run_ferryman, serve_cli


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_examples_export_writes_models_data_and_a_servable_spec(tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = run_ferryman(["examples", "export", str(out)])
    assert result.returncode == 0, result.stderr
    for rel in (
        "models/v1/model.onnx",
        "models/v2/model.onnx",
        "models/v1/reference.npy",
        "models/v2/reference.npy",
        "traffic.npy",
        "traffic_labels.npy",
        "deployment.yaml",
    ):
        assert (out / rel).is_file(), rel
    assert "deployment.yaml" in flat(result.stderr + result.stdout)

    spec = out / "deployment.yaml"
    validated = run_ferryman(["validate", str(spec)])
    assert validated.returncode == 0, validated.stderr
    assert "valid" in validated.stderr + validated.stdout
    md = load_deployment(spec)
    assert md.name == "breast-cancer"
    assert [v.name for v in md.spec.versions] == ["v1", "v2"]
    for v in md.spec.versions:
        assert v.sha256 == digest(Path(v.uri))
        assert v.reference_data is not None
        assert np.load(v.reference_data).shape[1] == 30
    assert (md.spec.traffic.stable, md.spec.traffic.candidate) == ("v1", "v2")

    x = np.load(out / "traffic.npy")
    labels = np.load(out / "traffic_labels.npy")
    assert x.dtype == np.float32
    assert x.shape == (labels.shape[0], 30)
    payload, _ = v2.encode_request({"input": x})
    with serve_cli(spec, env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")}) as server:
        for version in ("v1", "v2"):
            resp = httpx.post(
                f"{server.url}/v2/models/breast-cancer/versions/{version}/infer", content=payload
            )
            assert resp.status_code == 200, resp.text
            got = {o["name"]: o["data"] for o in v2.decode_response(resp.content)["outputs"]}
            want = reference_outputs(out / "models" / version / "model.onnx", {"input": x})
            np.testing.assert_array_equal(got["label"], want["label"])
            assert (got["label"] == labels).mean() > 0.9  # the sample models are real classifiers


def test_serve_a_single_onnx_file(tiny_models: dict[str, Path]) -> None:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    with serve_cli(tiny_models["add_one"]) as server:
        assert httpx.get(f"{server.url}/v1/models").json() == {"models": ["add_one"]}
        resp = httpx.post(
            f"{server.url}/v2/models/add_one/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": x.ravel().tolist()}]},
        )
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["model_version"] == "1"
        assert doc["outputs"][0]["data"] == (x + 1).ravel().tolist()
        # the user is told where it listens (issue 18: serve used to print nothing at all)
        assert f"serving on {server.url}" in flat(server.output()), server.output()


def write_spec(path: Path, versions: list[dict[str, Any]], **spec: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.ferryman.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "m"},
                "spec": {"versions": versions, **spec},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-file", "version 'v2' ({uri}): {uri}: model file not found"),
        ("checksum-mismatch", "version 'v2' ({uri}): {uri}: checksum mismatch (expected sha256 " + "f" * 64),
        ("not-onnx", "version 'v2' ({uri}): {uri}: not an ONNX model"),
        ("unsupported-opset", "version 'v2' ({uri}): {uri}: unsupported opset 9999"),
        ("unknown-field", "spec.traffic.strategee: unknown field"),
        ("garbage-onnx-target", "not an ONNX model"),
        ("missing-spec", "cannot read spec"),
    ],
    ids=lambda v: v if " " not in v and ":" not in v else "",
)
def test_serve_refuses_to_start_half_ready(
    tiny_models: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    good = {"name": "v1", "uri": str(tiny_models["add_one"])}
    uri = {
        "missing-file": str(tmp_path / "absent.onnx"),
        "checksum-mismatch": str(tiny_models["add_one"]),
        "not-onnx": str(tiny_models["random_bytes"]),
        "unsupported-opset": str(tiny_models["opset_9999"]),
    }.get(case, str(tiny_models["add_one"]))
    bad: dict[str, Any] = {"name": "v2", "uri": uri}
    extra: dict[str, Any] = {}
    if case == "checksum-mismatch":
        bad["sha256"] = "f" * 64
    if case == "unknown-field":
        extra["traffic"] = {"strategee": "canary"}
    target = write_spec(tmp_path / "spec.yaml", [good, bad], **extra)
    if case == "garbage-onnx-target":
        target = tmp_path / "garbage.onnx"
        shutil.copy(tiny_models["random_bytes"], target)
    if case == "missing-spec":
        target = tmp_path / "absent.yaml"

    # A server that started would block until the timeout (TimeoutExpired fails the test): exiting on its
    # own, non-zero, with the reason, is "never starts half-ready".
    result = run_ferryman(
        ["serve", str(target), "--port", str(free_port())],
        timeout=60,
        env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")},
    )
    output = flat(result.stderr + result.stdout)
    assert result.returncode != 0, output
    assert "error:" in output
    assert message.format(uri=uri) in output, output
    assert "Traceback" not in output


def test_validate_reports_field_paths(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        [{"name": "v1", "uri": "a.onnx"}, {"name": "v2", "uri": "b.onnx"}],
        traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 60, "v2": 30}}},
    )
    result = run_ferryman(["validate", str(spec)])
    assert result.returncode == 2
    assert "spec.traffic.abTest.weights: weights must sum to 100, got 90" in flat(result.stderr)
