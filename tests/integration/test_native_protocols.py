"""Protocol round trips over real HTTP against ``ferryman serve`` (uvicorn): every answer equals onnxruntime.

Covers v2 JSON (flat and nested data), the v2 binary tensor extension in both directions, KServe v1
instances -> predictions, version pinning, every GET endpoint, and the KServe SDK's REST client.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from ferryman.dataplane import DataPlane, ModelRepository
from ferryman.engine import OnnxModel
from ferryman.protocol import v2
from ferryman_runtimes.asgi.app import InferenceApp
from tests.helpers.models import reference_outputs
from tests.helpers.servers import CliServer, ThreadedServer, serve_app

MODEL = "breast-cancer"
HL = "inference-header-content-length"


@pytest.fixture(scope="module")
def client(native_server: CliServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=native_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def rows(traffic: np.ndarray) -> np.ndarray:
    return traffic[:17]


def expected(sample_models, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    return reference_outputs(Path(sample_models.versions[version]), {"input": x})


def outputs_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    hl = resp.headers.get(HL)
    doc = v2.decode_response(resp.content, header_length=int(hl) if hl is not None else None)
    return doc


def assert_outputs_equal(doc: dict[str, Any], want: dict[str, np.ndarray]) -> None:
    got = {o["name"]: o for o in doc["outputs"]}
    assert set(got) == set(want)
    for name, arr in want.items():
        assert got[name]["shape"] == list(arr.shape)
        np.testing.assert_array_equal(got[name]["data"], arr)


# -- GET endpoints -------------------------------------------------------------------------------------
def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = client.get("/v2").json()
    assert meta["name"] == "ferryman"
    assert "binary_tensor_data" in meta["extensions"]
    assert isinstance(meta["version"], str)


def test_model_metadata(client: httpx.Client) -> None:
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert meta["versions"] == ["v1", "v2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert meta["parameters"]["version"] == "v1"  # the stable version is the default
    pinned = client.get(f"/v2/models/{MODEL}/versions/v2").json()
    assert pinned["parameters"]["version"] == "v2"


def test_model_readiness(client: httpx.Client) -> None:
    resp = client.get(f"/v2/models/{MODEL}/ready")
    assert (resp.status_code, resp.json()) == (200, {"name": MODEL, "ready": True})
    assert client.get(f"/v2/models/{MODEL}/versions/v2/ready").status_code == 200


def test_v1_model_endpoints(client: httpx.Client) -> None:
    assert client.get("/v1/models").json() == {"models": [MODEL]}
    assert client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True, "model_version": "v1"}
    assert client.get(f"/v1/models/{MODEL}/versions/v2").json()["model_version"] == "v2"


def test_head_request(client: httpx.Client) -> None:
    resp = client.head("/v2/health/ready")
    assert resp.status_code == 200
    assert resp.content == b""


# -- v2 JSON -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_v2_json(client: httpx.Client, sample_models, rows: np.ndarray, nested: bool) -> None:
    data = rows.tolist() if nested else rows.ravel().tolist()
    resp = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "id": "req-1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": data}],
        },
    )
    assert resp.headers["content-type"] == "application/json"
    doc = outputs_of(resp)
    assert doc["model_name"] == MODEL
    assert doc["model_version"] == "v1"
    assert doc["id"] == "req-1"
    assert_outputs_equal(doc, expected(sample_models, "v1", rows))


def test_v2_json_fp64_is_cast_to_the_model_type(
    client: httpx.Client, sample_models, rows: np.ndarray
) -> None:
    x64 = rows.astype(np.float64)
    resp = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [
                {"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": x64.ravel().tolist()}
            ]
        },
    )
    assert_outputs_equal(outputs_of(resp), expected(sample_models, "v1", x64.astype(np.float32)))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v2_version_pin(client: httpx.Client, sample_models, rows: np.ndarray, version: str) -> None:
    payload, _ = v2.encode_request({"input": rows})
    resp = client.post(f"/v2/models/{MODEL}/versions/{version}/infer", content=payload)
    doc = outputs_of(resp)
    assert doc["model_version"] == version
    assert_outputs_equal(doc, expected(sample_models, version, rows))


def test_versions_really_differ(sample_models, rows: np.ndarray) -> None:
    """Guards the pin tests: they could not tell v1 from v2 if both gave identical outputs."""
    a = expected(sample_models, "v1", rows)["probabilities"]
    b = expected(sample_models, "v2", rows)["probabilities"]
    assert not np.array_equal(a, b)


def test_v2_requested_output_subset(client: httpx.Client, sample_models, rows: np.ndarray) -> None:
    payload, _ = v2.encode_request({"input": rows}, outputs=["probabilities"])
    doc = outputs_of(client.post(f"/v2/models/{MODEL}/infer", content=payload))
    want = expected(sample_models, "v1", rows)
    assert_outputs_equal(doc, {"probabilities": want["probabilities"]})


# -- v2 binary tensor extension ------------------------------------------------------------------------
def test_v2_binary_request_and_response(client: httpx.Client, sample_models, rows: np.ndarray) -> None:
    payload, hl = v2.encode_request({"input": rows}, binary=True, binary_output=True)
    assert hl is not None
    header = orjson.loads(payload[:hl])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": rows.nbytes}
    resp = client.post(
        f"/v2/models/{MODEL}/versions/v2/infer",
        content=payload,
        headers={"Inference-Header-Content-Length": str(hl), "Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/octet-stream"
    resp_hl = int(resp.headers[HL])
    resp_header = orjson.loads(resp.content[:resp_hl])
    assert resp_header["model_version"] == "v2"
    want = expected(sample_models, "v2", rows)
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in resp_header["outputs"]}
    assert sizes == {"label": want["label"].nbytes, "probabilities": want["probabilities"].nbytes}
    assert len(resp.content) == resp_hl + sum(sizes.values())
    # decode the binary part by hand (outputs are laid out in header order, little-endian)
    offset = resp_hl
    for out in resp_header["outputs"]:
        arr = want[out["name"]]
        raw = resp.content[offset : offset + out["parameters"]["binary_data_size"]]
        offset += len(raw)
        np.testing.assert_array_equal(
            np.frombuffer(raw, dtype=arr.dtype.newbyteorder("<")).reshape(out["shape"]), arr
        )


def test_v2_binary_request_json_response(client: httpx.Client, sample_models, rows: np.ndarray) -> None:
    payload, hl = v2.encode_request({"input": rows}, binary=True)
    resp = client.post(
        f"/v2/models/{MODEL}/infer", content=payload, headers={"Inference-Header-Content-Length": str(hl)}
    )
    assert HL not in resp.headers
    assert_outputs_equal(outputs_of(resp), expected(sample_models, "v1", rows))


def test_v2_per_output_binary_data(client: httpx.Client, sample_models, rows: np.ndarray) -> None:
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ],
        "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    resp = client.post(f"/v2/models/{MODEL}/infer", json=body)
    hl = int(resp.headers[HL])
    header = orjson.loads(resp.content[:hl])
    by_name = {o["name"]: o for o in header["outputs"]}
    assert "data" in by_name["label"]
    assert "data" not in by_name["probabilities"]
    assert by_name["probabilities"]["parameters"]["binary_data_size"] == rows.shape[0] * 2 * 4
    assert_outputs_equal(outputs_of(resp), expected(sample_models, "v1", rows))


def test_one_row_and_zero_rows(client: httpx.Client, sample_models, rows: np.ndarray) -> None:
    one = rows[:1]
    payload, _ = v2.encode_request({"input": one})
    assert_outputs_equal(
        outputs_of(client.post(f"/v2/models/{MODEL}/infer", content=payload)),
        expected(sample_models, "v1", one),
    )
    empty = np.zeros((0, 30), dtype=np.float32)
    payload, _ = v2.encode_request({"input": empty})
    doc = outputs_of(client.post(f"/v2/models/{MODEL}/infer", content=payload))
    assert {o["name"]: o["shape"] for o in doc["outputs"]} == {"label": [0], "probabilities": [0, 2]}


# -- KServe v1 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [None, "v2"])
def test_v1_instances_to_predictions(
    client: httpx.Client, sample_models, rows: np.ndarray, version: str | None
) -> None:
    path = (
        f"/v1/models/{MODEL}:predict" if version is None else f"/v1/models/{MODEL}/versions/{version}:predict"
    )
    resp = client.post(path, json={"instances": rows.tolist()})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["model_name"] == MODEL
    assert doc["model_version"] == (version or "v1")
    want = expected(sample_models, version or "v1", rows)
    predictions = doc["predictions"]
    assert len(predictions) == rows.shape[0]
    np.testing.assert_array_equal([p["label"] for p in predictions], want["label"])
    np.testing.assert_array_equal(
        np.array([p["probabilities"] for p in predictions], dtype=np.float32), want["probabilities"]
    )


# -- the KServe SDK's REST client ----------------------------------------------------------------------
def test_kserve_rest_client(
    native_server: CliServer, sample_models, rows: np.ndarray, tmp_path: Path
) -> None:
    """The SDK runs in its own interpreter: kserve's v2 gRPC stubs and tritonclient's (which the gRPC tests
    load into this process) declare the same protobuf symbols of package ``inference``, so one process
    cannot import both. The rows and the expected outputs travel as .npy files."""
    want = expected(sample_models, "v1", rows)
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "label.npy", want["label"])
    np.save(tmp_path / "probabilities.npy", want["probabilities"])
    script = KSERVE_SCENARIO.format(url=native_server.url, model=MODEL, dir=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.strip() == "ok", result.stdout


KSERVE_SCENARIO = """
import asyncio
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

URL, MODEL, DIR = {url!r}, {model!r}, {dir!r}
rows = np.load(DIR + "/rows.npy")
want = {{"label": np.load(DIR + "/label.npy"), "probabilities": np.load(DIR + "/probabilities.npy")}}


async def scenario() -> None:
    v2_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        assert await v2_client.is_server_live(URL)
        assert await v2_client.is_server_ready(URL)
        assert await v2_client.is_model_ready(URL, MODEL)
        for binary in (False, True):
            inp = InferInput(name="input", shape=list(rows.shape), datatype="FP32")
            inp.set_data_from_numpy(rows, binary_data=binary)
            result = await v2_client.infer(URL, InferRequest(
                model_name=MODEL, infer_inputs=[inp], request_id=f"kserve-{{binary}}"), model_name=MODEL)
            # (the SDK's InferResponse.from_bytes drops model_version; the other tests check it)
            assert (result.model_name, result.id) == (MODEL, f"kserve-{{binary}}"), result
            got = {{o.name: o.as_numpy() for o in result.outputs}}
            np.testing.assert_array_equal(got["label"], want["label"])
            np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
    finally:
        await v2_client.close()
    v1_client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
    try:
        assert await v1_client.is_model_ready(URL, MODEL)
        doc = await v1_client.infer(URL, {{"instances": rows.tolist()}}, model_name=MODEL)
        np.testing.assert_array_equal([p["label"] for p in doc["predictions"]], want["label"])
    finally:
        await v1_client.close()


asyncio.run(scenario())
print("ok")
"""


# -- other signatures: several inputs, strings (served in-thread) ---------------------------------------
@pytest.fixture(scope="module")
def tiny_server(tiny_models: dict[str, Path]) -> Iterator[ThreadedServer]:
    repo = ModelRepository()
    repo.add(OnnxModel.load(tiny_models["two_inputs"], name="pair", version="1"))
    repo.add(OnnxModel.load(tiny_models["strings"], name="echo", version="1"))
    repo.ready = True
    with serve_app(InferenceApp(DataPlane(repo))) as server:
        yield server


def test_two_inputs_v2_and_v1(tiny_server: ThreadedServer, tiny_models: dict[str, Path]) -> None:
    a = np.array([[1.5, 2], [3, 4], [5, 6]], dtype=np.float32)
    b = np.array([[2, 2], [0.5, 1], [-1, 0]], dtype=np.float32)
    want = reference_outputs(tiny_models["two_inputs"], {"a": a, "b": b})
    for binary in (False, True):
        payload, hl = v2.encode_request({"b": b, "a": a}, binary=binary, binary_output=binary)
        headers = {} if hl is None else {"Inference-Header-Content-Length": str(hl)}
        resp = httpx.post(f"{tiny_server.url}/v2/models/pair/infer", content=payload, headers=headers)
        assert_outputs_equal(outputs_of(resp), want)
    instances = [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(3)]
    resp = httpx.post(f"{tiny_server.url}/v1/models/pair:predict", json={"instances": instances})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    np.testing.assert_array_equal(np.array([p["sum"] for p in predictions], dtype=np.float32), want["sum"])
    np.testing.assert_array_equal(np.array([p["prod"] for p in predictions], dtype=np.float32), want["prod"])


def test_strings_json_and_binary(tiny_server: ThreadedServer) -> None:
    words = ["ferry", "", "ünïcode"]
    resp = httpx.post(
        f"{tiny_server.url}/v2/models/echo/infer",
        json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": words}]},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["outputs"] == [{"name": "same", "datatype": "BYTES", "shape": [3], "data": words}]
    payload, hl = v2.encode_request(
        {"text": np.array([w.encode() for w in words], dtype=object)}, binary=True, binary_output=True
    )
    resp = httpx.post(
        f"{tiny_server.url}/v2/models/echo/infer",
        content=payload,
        headers={"Inference-Header-Content-Length": str(hl)},
    )
    doc = outputs_of(resp)
    assert [x.decode() for x in doc["outputs"][0]["data"]] == words
    resp = httpx.post(f"{tiny_server.url}/v1/models/echo:predict", json={"instances": words})
    assert resp.json()["predictions"] == words
