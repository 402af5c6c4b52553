"""The ``ferryman-onnx`` KServe runtime for real: the exact container command of the ClusterServingRuntime.

The command and arguments are taken from the committed ClusterServingRuntime and the operator's
InferenceService (``{{.Name}}`` substituted, the predictor's args appended, as KServe does), with only the
model directory and port pointed at this machine: a directory laid out like the storage initializer's
``/mnt/models``."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import yaml

from ferryman import processes, rollout
from ferryman.protocol import v2
from ferryman.spec import parse_deployment
from ferryman_operator.backends import kserve
from ferryman_operator.backends.base import Context
from ferryman_operator.settings import Settings
from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port
from tests.helpers.servers import ServerFailed, wait_http

MODEL = "breast-cancer"
HL = "inference-header-content-length"


@dataclass
class Runtime:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


RUNTIME_FILE = (
    Path(__file__).resolve().parents[2]
    / "runtimes"
    / "ferryman_runtimes"
    / "kserve"
    / "clusterservingruntime.yaml"
)


def inference_service(sample_models, version: str) -> dict:
    """The operator's InferenceService for ``version`` of the sample deployment."""
    md = parse_deployment(yaml.safe_load(Path(sample_models.spec).read_text()))
    state, _ = rollout.start(md, now=0.0)
    ctx = Context(
        md=md,
        namespace="models",
        owner={},
        state=state,
        table=rollout.table_for(md, state),
        settings=Settings(image="img:1", ray_image="ray:1", identity="t"),
    )
    return kserve.inference_service(ctx, version)


def container_command(sample_models, version: str, *, model_dir: Path, port: int) -> list[str]:
    """The runtime container's argv for the operator's InferenceService of ``version`` on the committed
    ClusterServingRuntime, localised (dir and port)."""
    isvc = inference_service(sample_models, version)
    [c] = yaml.safe_load(RUNTIME_FILE.read_text())["spec"]["containers"]
    assert c["command"][:2] == ["python", "-m"]
    args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in c["args"]]
    args = [
        f"--model_dir={model_dir}"
        if a.startswith("--model_dir=")
        else f"--http_port={port}"
        if a.startswith("--http_port=")
        else a
        for a in args
    ]
    return [
        sys.executable,
        *c["command"][1:],
        *args,
        *isvc["spec"]["predictor"]["model"]["args"],
        "--host",
        "127.0.0.1",
    ]


@pytest.fixture(scope="module")
def mnt_models(sample_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the storage initializer leaves for ``storageUri: s3://.../v2/model.onnx``."""
    d = tmp_path_factory.mktemp("mnt") / "models"
    d.mkdir()
    (d / "model.onnx").write_bytes(Path(sample_models.versions["v2"]).read_bytes())
    return d


def start(argv: list[str], port: int, *, timeout: float = 60.0, env: dict[str, str] | None = None) -> Runtime:
    fd, name = tempfile.mkstemp(prefix="ferryman-kserve-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    rt = Runtime(url=f"http://127.0.0.1:{port}", process=process, log=Path(name))
    try:
        wait_http(rt.url + "/v2/health/ready", timeout=timeout, alive=lambda: process.poll() is None)
    except ServerFailed as err:
        stop(rt)
        raise ServerFailed(f"{err}\n{rt.output()}") from err
    return rt


def stop(rt: Runtime) -> None:
    processes.stop(rt.process, timeout=15)
    rt.log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def runtime(sample_models, mnt_models: Path) -> Iterator[Runtime]:
    port = free_port()
    rt = start(container_command(sample_models, "v2", model_dir=mnt_models, port=port), port)
    yield rt
    stop(rt)


@pytest.fixture(scope="module")
def client(runtime: Runtime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=runtime.url, timeout=30) as c:
        yield c


def expected(sample_models, x: np.ndarray) -> dict[str, np.ndarray]:
    return reference_outputs(Path(sample_models.versions["v2"]), {"input": x})


def test_kserve_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/").json() == {"status": "alive"}
    assert client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True, "model_version": "v2"}
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert client.get("/v1/models/breast-cancer-v2").status_code == 404  # served under the spec's name
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]


def test_header_only_responses_and_keep_alive(runtime: Runtime, traffic: np.ndarray) -> None:
    """The server sends headers and body in one write; a response without a body still goes out."""
    with httpx.Client(base_url=runtime.url, timeout=10) as c:
        head = c.head("/v2/health/ready")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0
        body, _ = v2.encode_request({"input": traffic[:1]})
        for _ in range(20):  # one keep-alive connection, answers never run together
            resp = c.post(f"/v2/models/{MODEL}/infer", content=body)
            assert resp.status_code == 200
            assert resp.json()["model_version"] == "v2"
        assert c.head("/v2/health/live").status_code == 200


def test_v2_json_equals_onnx_runtime(client: httpx.Client, sample_models, traffic: np.ndarray) -> None:
    rows = traffic[:9]
    body, _ = v2.encode_request({"input": rows})
    resp = client.post(f"/v2/models/{MODEL}/infer", content=body)
    assert resp.status_code == 200, resp.text
    doc = v2.decode_response(resp.content)
    assert (doc["model_name"], doc["model_version"]) == (MODEL, "v2")
    want = expected(sample_models, rows)
    outs = {o["name"]: o["data"] for o in doc["outputs"]}
    np.testing.assert_array_equal(outs["label"], want["label"])
    np.testing.assert_allclose(outs["probabilities"], want["probabilities"], rtol=1e-6)


def test_v2_binary_equals_onnx_runtime(client: httpx.Client, sample_models, traffic: np.ndarray) -> None:
    rows = traffic[9:40]
    body, hl = v2.encode_request({"input": rows}, binary=True, binary_output=True)
    resp = client.post(
        f"/v2/models/{MODEL}/infer",
        content=body,
        headers={HL: str(hl), "content-type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    doc = v2.decode_response(resp.content, header_length=int(resp.headers[HL]))
    want = expected(sample_models, rows)
    outs = {o["name"]: o["data"] for o in doc["outputs"]}
    np.testing.assert_array_equal(outs["label"], want["label"])
    np.testing.assert_array_equal(outs["probabilities"], want["probabilities"])


def test_v1_predict_equals_onnx_runtime(client: httpx.Client, sample_models, traffic: np.ndarray) -> None:
    rows = traffic[40:46]
    resp = client.post(f"/v1/models/{MODEL}:predict", content=orjson.dumps({"instances": rows.tolist()}))
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    labels = [p["label"] if isinstance(p, dict) else p for p in predictions]
    assert labels == expected(sample_models, rows)["label"].tolist()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (f"/v2/models/{MODEL}/infer", b"[1, 2", 400),
        (
            f"/v2/models/{MODEL}/infer",
            orjson.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
            ),
            400,
        ),
        (
            f"/v2/models/{MODEL}/infer",
            orjson.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ["x"] * 30}]}
            ),
            400,
        ),
        (f"/v1/models/{MODEL}:predict", orjson.dumps({"instances": "nope"}), 400),
        ("/v2/models/other/infer", orjson.dumps({"inputs": []}), 404),
    ],
)
def test_bad_input_is_a_4xx_with_an_error(client: httpx.Client, path: str, body: bytes, status: int) -> None:
    resp = client.post(path, content=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]


def test_metrics_count_the_requests(client: httpx.Client, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:1]})
    for _ in range(5):
        assert client.post(f"/v2/models/{MODEL}/infer", content=body).status_code == 200
    text = client.get("/metrics").text
    lines = [
        x
        for x in text.splitlines()
        if x.startswith("ferryman_requests_total{") and 'code="200"' in x and 'protocol="v2"' in x
    ]
    assert sum(float(x.rsplit(" ", 1)[1]) for x in lines) >= 5, lines
    assert 'ferryman_model_ready{model="breast-cancer",version="v2"} 1.0' in text


@pytest.mark.slow  # two more server processes to start
def test_two_workers_answer_with_one_metrics_view(
    sample_models, mnt_models: Path, traffic: np.ndarray
) -> None:
    port = free_port()
    rt = start(
        [*container_command(sample_models, "v2", model_dir=mnt_models, port=port), "--workers", "2"], port
    )
    try:
        body, _ = v2.encode_request({"input": traffic[:3]})
        with httpx.Client(base_url=rt.url, timeout=30) as c:
            for _ in range(30):
                with httpx.Client(
                    base_url=rt.url, timeout=30
                ) as fresh:  # new connections spread over workers
                    assert fresh.post(f"/v2/models/{MODEL}/infer", content=body).status_code == 200
            # each worker folds its samples into the shared files at least every 0.25 s: wait for one tick
            total = 0.0
            for _ in range(50):
                text = c.get("/metrics").text
                total = sum(
                    float(x.rsplit(" ", 1)[1])
                    for x in text.splitlines()
                    if x.startswith("ferryman_requests_total{") and 'code="200"' in x
                )
                if total >= 30:
                    break
                time.sleep(0.2)
        assert total == 30
    finally:
        stop(rt)


def test_a_missing_model_fails_fast_with_a_clear_message(sample_models, tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    argv = container_command(sample_models, "v1", model_dir=empty, port=free_port())
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "no .onnx model file" in done.stderr
    assert "Traceback" not in done.stderr


# -- the `kserve` entry point: a ModelDeployment spec in, the KServe-contract server out -----------------
ENTRY_POINT = (
    "import json, sys; from ferryman.cli.runtimes import launcher; "
    "launcher('kserve')(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), **json.loads(sys.argv[3]))"
)


def entry_point_command(spec: Path, port: int, **kwargs: object) -> list[str]:
    """How the bench harness (and any caller of the ``ferryman.runtimes`` group) starts the runtime."""
    return [sys.executable, "-c", ENTRY_POINT, str(spec), str(port), orjson.dumps(kwargs).decode()]


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kserve-root")


@pytest.fixture(scope="module")
def from_spec(sample_spec: Path, model_root: Path) -> Iterator[Runtime]:
    port = free_port()
    rt = start(entry_point_command(sample_spec, port, model_root=str(model_root)), port)
    yield rt
    stop(rt)


def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    from ferryman_runtimes.kserve.launcher import run

    (ep,) = [ep for ep in entry_points(group="ferryman.runtimes") if ep.name == "kserve"]
    assert ep.load() is run


def test_entry_point_serves_the_stable_version_on_both_protocols(
    from_spec: Runtime, sample_models, traffic: np.ndarray
) -> None:
    rows = traffic[:7]
    want = reference_outputs(Path(sample_models.versions["v1"]), {"input": rows})  # v1 is the spec's stable
    with httpx.Client(base_url=from_spec.url, timeout=30) as c:
        assert c.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True, "model_version": "v1"}
        body, _ = v2.encode_request({"input": rows})
        resp = c.post(f"/v2/models/{MODEL}/infer", content=body)
        assert resp.status_code == 200, resp.text
        doc = v2.decode_response(resp.content)
        assert (doc["model_name"], doc["model_version"]) == (MODEL, "v1")
        outs = {o["name"]: o["data"] for o in doc["outputs"]}
        np.testing.assert_array_equal(outs["label"], want["label"])
        np.testing.assert_allclose(outs["probabilities"], want["probabilities"], rtol=1e-6)
        resp = c.post(f"/v1/models/{MODEL}:predict", content=orjson.dumps({"instances": rows.tolist()}))
        assert resp.status_code == 200, resp.text
        labels = [p["label"] if isinstance(p, dict) else p for p in resp.json()["predictions"]]
        assert labels == want["label"].tolist()
        bad = c.post(f"/v2/models/{MODEL}/infer", content=b"[1, 2")
        assert bad.status_code == 400 and bad.json()["error"]


def test_entry_point_lays_out_the_model_directory_like_the_storage_initializer(
    from_spec: Runtime, model_root: Path, sample_models
) -> None:
    directory = model_root / MODEL / "v1"
    [entry] = list(directory.iterdir())  # exactly one file, under the URI's base name
    assert entry.name == "model.onnx"
    assert entry.resolve() == Path(sample_models.versions["v1"]).resolve()
    assert f"model directory {directory}" in from_spec.output()


@contextlib.contextmanager
def files_over_http(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietFiles, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


def test_entry_point_downloads_a_remote_version_and_checks_its_sha256(
    sample_models, tmp_path: Path, traffic: np.ndarray
) -> None:
    doc = yaml.safe_load(Path(sample_models.spec).read_text())
    with files_over_http(Path(sample_models.directory)) as base:
        for v in doc["spec"]["versions"]:
            v["uri"] = f"{base}/{v['uri']}"
        spec = tmp_path / "remote.yaml"
        spec.write_text(yaml.safe_dump(doc))
        root = str(tmp_path / "root")
        cache = {"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")}  # not the user's model cache
        port = free_port()
        rt = start(entry_point_command(spec, port, version="v2", model_root=root), port, env=cache)
        try:
            body, _ = v2.encode_request({"input": traffic[:3]})
            resp = httpx.post(f"{rt.url}/v2/models/{MODEL}/infer", content=body, timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.json()["model_version"] == "v2"
        finally:
            stop(rt)
        [entry] = list((tmp_path / "root" / MODEL / "v2").iterdir())
        assert entry.resolve().read_bytes() == Path(sample_models.versions["v2"]).read_bytes()

        doc["spec"]["versions"][1]["sha256"] = "0" * 64
        spec.write_text(yaml.safe_dump(doc))
        done = subprocess.run(
            entry_point_command(spec, free_port(), version="v2", model_root=root),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **cache},
        )
        assert done.returncode != 0
        assert "checksum mismatch" in done.stderr
