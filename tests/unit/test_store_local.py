"""Model store, local side: plain paths, file:// URIs, sha256 verification, the factory and load errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from ferryman.dataplane import load_versions, repository_for, repository_for_file
from ferryman.errors import ModelNotFound, ModelStoreError, VersionNotFound
from ferryman.spec import parse_deployment
from ferryman.store import fetch, fetcher_for, redact, sha256_of
from ferryman.store.base import cache_path, default_cache_dir
from ferryman.store.http import HttpFetcher
from ferryman.store.local import LocalFetcher
from ferryman.store.s3 import S3Fetcher


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_path(tiny_models: dict[str, Path], model_cache: Path) -> None:
    path = tiny_models["add_one"]
    assert fetch(str(path), cache_dir=model_cache) == path
    assert not any(model_cache.iterdir())  # local files are used in place, never copied


def test_file_uri_with_escaped_characters(
    tiny_models: dict[str, Path], tmp_path: Path, model_cache: Path
) -> None:
    spaced = tmp_path / "my models" / "add one.onnx"
    spaced.parent.mkdir()
    shutil.copy(tiny_models["add_one"], spaced)
    assert fetch(spaced.as_uri(), cache_dir=model_cache) == spaced
    assert "%20" in spaced.as_uri()


def test_sha256_good_and_mismatch(tiny_models: dict[str, Path], model_cache: Path) -> None:
    path = tiny_models["add_one"]
    good = digest(path)
    assert sha256_of(path) == good
    assert fetch(str(path), sha256=good, cache_dir=model_cache) == path
    assert fetch(str(path), sha256=good.upper(), cache_dir=model_cache) == path
    wrong = "0" * 64
    with pytest.raises(ModelStoreError) as info:
        fetch(str(path), sha256=wrong, cache_dir=model_cache)
    assert f"checksum mismatch (expected sha256 {wrong}, got {good})" in str(info.value)


def test_missing_file(tmp_path: Path, model_cache: Path) -> None:
    with pytest.raises(ModelStoreError, match="model file not found"):
        fetch(str(tmp_path / "absent.onnx"), cache_dir=model_cache)
    with pytest.raises(ModelStoreError, match="model file not found"):
        fetch((tmp_path / "absent.onnx").as_uri(), cache_dir=model_cache)


def test_factory() -> None:
    assert isinstance(fetcher_for("/x/y.onnx"), LocalFetcher)
    assert isinstance(fetcher_for("file:///x/y.onnx"), LocalFetcher)
    assert isinstance(fetcher_for("http://h/y.onnx"), HttpFetcher)
    assert isinstance(fetcher_for("HTTPS://h/y.onnx"), HttpFetcher)
    assert isinstance(fetcher_for("s3://b/k.onnx"), S3Fetcher)
    with pytest.raises(ModelStoreError, match="unsupported URI scheme 'ftp'"):
        fetcher_for("ftp://user:pw@h/y.onnx")


def test_redact_hides_credentials() -> None:
    assert redact("https://user:secret@host/m.onnx") == "https://***@host/m.onnx"
    assert redact("https://host/m.onnx") == "https://host/m.onnx"
    assert redact("/plain/path@1.onnx") == "/plain/path@1.onnx"
    with pytest.raises(ModelStoreError) as info:
        fetcher_for("gs://user:secret@bucket/m.onnx")
    assert "secret" not in str(info.value)


def test_cache_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = cache_path(tmp_path, "http://h/models/a.onnx?sig=1")
    assert a.name == "a.onnx"
    assert a == cache_path(tmp_path, "http://h/models/a.onnx?sig=1")
    assert a != cache_path(tmp_path, "http://other/models/a.onnx?sig=1")
    monkeypatch.setenv("FERRYMAN_MODEL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FERRYMAN_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ferryman" / "models"


def spec_with(versions: list[dict[str, str]]):
    return parse_deployment(
        {
            "apiVersion": "serving.ferryman.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {"versions": versions},
        }
    )


def test_repository_from_a_spec(tiny_models: dict[str, Path], model_cache: Path) -> None:
    path = tiny_models["add_one"]
    md = spec_with(
        [{"name": "v1", "uri": str(path), "sha256": digest(path)}, {"name": "v2", "uri": path.as_uri()}]
    )
    md.spec.traffic.stable = "v2"
    repo = repository_for(md, cache_dir=model_cache)
    assert repo.ready
    assert repo.names() == ["m"]
    assert repo.get("m").version == "v2"  # the stable version answers unversioned requests
    assert repo.get("m", "v1").version == "v1"
    with pytest.raises(VersionNotFound, match="has no version 'v3'"):
        repo.get("m", "v3")
    with pytest.raises(ModelNotFound, match="model 'x' not found"):
        repo.get("x")


def test_repository_for_a_single_file(tiny_models: dict[str, Path]) -> None:
    repo = repository_for_file(tiny_models["add_one"])
    assert repo.ready
    assert repo.get("add_one").version == "1"


@pytest.mark.parametrize(
    ("version", "match"),
    [
        ("missing", "model file not found"),
        ("mismatch", "checksum mismatch"),
        ("random_bytes", "not an ONNX model"),
        ("opset_9999", "unsupported opset 9999"),
    ],
)
def test_load_errors_name_the_version(
    tiny_models: dict[str, Path], tmp_path: Path, model_cache: Path, version: str, match: str
) -> None:
    uri = {
        "missing": str(tmp_path / "absent.onnx"),
        "mismatch": str(tiny_models["add_one"]),
        "random_bytes": str(tiny_models["random_bytes"]),
        "opset_9999": str(tiny_models["opset_9999"]),
    }[version]
    bad: dict[str, str] = {"name": "bad", "uri": uri}
    if version == "mismatch":
        bad["sha256"] = "f" * 64
    md = spec_with([{"name": "good", "uri": str(tiny_models["add_one"])}, bad])
    with pytest.raises(ModelStoreError) as info:
        load_versions(md, cache_dir=model_cache)
    message = str(info.value)
    assert message.startswith(f"version 'bad' ({uri}): ")
    assert match in message
    # asking only for the good version loads it
    (only,) = load_versions(md, versions=["good"], cache_dir=model_cache)
    assert only.version == "good"
