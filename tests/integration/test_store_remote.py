"""Model store against real servers on loopback: an HTTP file server and moto's S3-compatible server.

Checks fetch + sha256 verification, cache reuse (counted on the server), download errors, and a
``ferryman serve`` whose versions come from http:// and s3:// URIs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from ferryman.errors import ModelStoreError
from ferryman.protocol import v2
from ferryman.store import fetch
from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port
from tests.helpers.servers import serve_cli


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a counting HTTP file server -----------------------------------------------------------------------
@dataclass
class FileServer:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    def count(self, name: str) -> int:
        return sum(1 for r in self.requests if r == f"/{name}")


@pytest.fixture(scope="module")
def file_server(
    tmp_path_factory: pytest.TempPathFactory, sample_models, tiny_models: dict[str, Path]
) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("http-root")
    for version, path in sample_models.versions.items():
        (root / f"{version}.onnx").write_bytes(Path(path).read_bytes())
    (root / "random.onnx").write_bytes(tiny_models["random_bytes"].read_bytes())
    (root / "opset9999.onnx").write_bytes(tiny_models["opset_9999"].read_bytes())
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}", requests=seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_http_fetch_with_sha256_and_cache_reuse(file_server: FileServer, model_cache: Path) -> None:
    original = file_server.root / "v1.onnx"
    uri = f"{file_server.url}/v1.onnx"
    before = file_server.count("v1.onnx")
    first = fetch(uri, sha256=digest(original), cache_dir=model_cache)
    assert first.read_bytes() == original.read_bytes()
    assert model_cache in first.parents
    assert file_server.count("v1.onnx") == before + 1
    second = fetch(uri, sha256=digest(original), cache_dir=model_cache)
    assert second == first
    assert file_server.count("v1.onnx") == before + 1  # served from the cache: the server saw nothing
    # a corrupted cache entry is not trusted: it is downloaded again
    first.write_bytes(b"corrupted")
    third = fetch(uri, sha256=digest(original), cache_dir=model_cache)
    assert third.read_bytes() == original.read_bytes()
    assert file_server.count("v1.onnx") == before + 2


def test_http_checksum_mismatch(file_server: FileServer, model_cache: Path) -> None:
    with pytest.raises(ModelStoreError, match="checksum mismatch"):
        fetch(f"{file_server.url}/v2.onnx", sha256="0" * 64, cache_dir=model_cache)


def test_http_errors(file_server: FileServer, model_cache: Path) -> None:
    with pytest.raises(ModelStoreError, match="download failed with HTTP 404"):
        fetch(f"{file_server.url}/absent.onnx", cache_dir=model_cache)
    with pytest.raises(ModelStoreError, match="download failed: ConnectError") as info:
        fetch(f"http://user:hunter2@127.0.0.1:{free_port()}/m.onnx", cache_dir=model_cache)
    assert "hunter2" not in str(info.value)
    # nothing half-written is left behind
    assert not [p for p in model_cache.rglob("*") if p.is_file()]


# -- moto's S3 server ----------------------------------------------------------------------------------
BUCKET = "models"


@pytest.fixture(scope="module")
def s3_endpoint(sample_models, tiny_models: dict[str, Path]) -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket=BUCKET)
        for version, path in sample_models.versions.items():
            client.upload_file(str(path), BUCKET, f"breast-cancer/{version}/model.onnx")
        client.put_object(
            Bucket=BUCKET, Key="broken/model.onnx", Body=tiny_models["random_bytes"].read_bytes()
        )
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("FERRYMAN_S3_ENDPOINT", raising=False)
    return env


def test_s3_fetch_and_verify(s3_env: dict[str, str], sample_models, model_cache: Path) -> None:
    original = Path(sample_models.versions["v2"])
    got = fetch(f"s3://{BUCKET}/breast-cancer/v2/model.onnx", sha256=digest(original), cache_dir=model_cache)
    assert got.read_bytes() == original.read_bytes()
    assert model_cache in got.parents
    with pytest.raises(ModelStoreError, match="checksum mismatch"):
        fetch(f"s3://{BUCKET}/breast-cancer/v1/model.onnx", sha256="0" * 64, cache_dir=model_cache)


def test_ferryman_s3_endpoint_overrides(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sample_models, model_cache: Path
) -> None:
    monkeypatch.setenv("FERRYMAN_S3_ENDPOINT", s3_env["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens here
    got = fetch(f"s3://{BUCKET}/breast-cancer/v1/model.onnx", cache_dir=model_cache)
    assert got.read_bytes() == Path(sample_models.versions["v1"]).read_bytes()


def test_s3_errors(s3_env: dict[str, str], model_cache: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"s3://models/absent.onnx: S3 (404|NoSuchKey)"):
        fetch(f"s3://{BUCKET}/absent.onnx", cache_dir=model_cache)
    with pytest.raises(ModelStoreError, match=r"S3 (404|NoSuchBucket)"):
        fetch("s3://no-such-bucket/m.onnx", cache_dir=model_cache)
    with pytest.raises(ModelStoreError, match="expected s3://bucket/key"):
        fetch(f"s3://{BUCKET}", cache_dir=model_cache)
    assert not [p for p in model_cache.rglob("*") if p.is_file()]


# -- serving from remote stores ------------------------------------------------------------------------
def remote_spec(tmp_path: Path, versions: list[dict[str, Any]]) -> Path:
    spec = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "breast-cancer"},
        "spec": {"versions": versions},
    }
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_serve_versions_from_http_and_s3(
    s3_env: dict[str, str], file_server: FileServer, sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    v1, v2_path = Path(sample_models.versions["v1"]), Path(sample_models.versions["v2"])
    spec = remote_spec(
        tmp_path,
        [
            {"name": "v1", "uri": f"{file_server.url}/v1.onnx", "sha256": digest(v1)},
            {"name": "v2", "uri": f"s3://{BUCKET}/breast-cancer/v2/model.onnx", "sha256": digest(v2_path)},
        ],
    )
    x = traffic[:9]
    payload, _ = v2.encode_request({"input": x})
    with serve_cli(spec, env={**s3_env, "FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")}) as server:
        for version, path in (("v1", v1), ("v2", v2_path)):
            resp = httpx.post(
                f"{server.url}/v2/models/breast-cancer/versions/{version}/infer", content=payload
            )
            assert resp.status_code == 200, resp.text
            doc = v2.decode_response(resp.content)
            assert doc["model_version"] == version
            want = reference_outputs(path, {"input": x})
            for out in doc["outputs"]:
                np.testing.assert_array_equal(out["data"], want[out["name"]])
