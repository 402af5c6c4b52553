"""The ONNX Runtime engine: file checks (not ONNX, opset range) and results equal to plain onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferryman.engine import MIN_OPSET, OnnxModel, check_onnx_file, max_supported_opset
from ferryman.errors import InvalidInput, ModelStoreError
from tests.helpers.models import model_with_opset, reference_outputs


def test_check_returns_the_opset(tiny_models: dict[str, Path]) -> None:
    assert check_onnx_file(tiny_models["add_one"]) == 17


@pytest.mark.parametrize(
    ("name", "match"),
    [("random_bytes", "not an ONNX model"), ("opset_9999", "unsupported opset 9999")],
)
def test_check_rejects_bad_files(tiny_models: dict[str, Path], name: str, match: str) -> None:
    with pytest.raises(ModelStoreError, match=match) as info:
        check_onnx_file(tiny_models[name])
    assert str(tiny_models[name]) in str(info.value)


def test_check_rejects_missing_empty_and_text_files(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="model file not found"):
        check_onnx_file(tmp_path / "absent.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelStoreError, match="not an ONNX model"):
        check_onnx_file(empty)
    text = tmp_path / "text.onnx"
    text.write_text("this is a README, not a model\n")
    with pytest.raises(ModelStoreError, match="not an ONNX model"):
        check_onnx_file(text)


def test_opset_bounds(tmp_path: Path) -> None:
    too_old = model_with_opset(tmp_path / "old.onnx", MIN_OPSET - 1)
    with pytest.raises(ModelStoreError, match=f"unsupported opset {MIN_OPSET - 1}"):
        OnnxModel.load(too_old, name="m", version="1")
    top = max_supported_opset()
    with pytest.raises(ModelStoreError, match=f"supported: {MIN_OPSET}..{top}"):
        OnnxModel.load(model_with_opset(tmp_path / "new.onnx", top + 1), name="m", version="1")


def test_load_and_run_equal_onnxruntime(tiny_models: dict[str, Path]) -> None:
    model = OnnxModel.load(tiny_models["two_inputs"], name="t", version="3", threads=2)
    assert (model.name, model.version, model.opset) == ("t", "3", 17)
    assert model.output_names == ["sum", "prod"]
    feed = {
        "a": np.array([[1, 2], [3, 4]], dtype=np.float32),
        "b": np.array([[5, 6], [7, 8]], dtype=np.float32),
    }
    got = model.run(feed)
    want = reference_outputs(tiny_models["two_inputs"], feed)
    assert list(got) == ["sum", "prod"]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    only = model.run(feed, ["prod"])
    assert list(only) == ["prod"]
    np.testing.assert_array_equal(only["prod"], want["prod"])


def test_sample_model_matches_onnxruntime(sample_models, traffic: np.ndarray) -> None:
    path = sample_models.versions["v2"]
    model = OnnxModel.load(path, name="breast-cancer", version="v2")
    feed = {"input": traffic[:16]}
    got = model.run(feed)
    want = reference_outputs(path, feed)
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
    assert set(np.unique(got["label"])) <= {0, 1}


def test_runtime_rejection_is_invalid_input(tiny_models: dict[str, Path]) -> None:
    model = OnnxModel.load(tiny_models["add_one"], name="m", version="1")
    with pytest.raises(InvalidInput, match="model rejected the input"):
        model.run({"x": np.ones((2, 3), dtype=np.float64)})
