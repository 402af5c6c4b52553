"""The bad-input matrix against a real ``ferryman serve``: every case is a 4xx with ``{"error": "..."}`` that
says what and where, and the server keeps answering correctly afterwards. Also: not-ready (503), raw
garbage on the socket, and a server log free of tracebacks.
"""

from __future__ import annotations

import socket
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
from tests.helpers.servers import CliServer, ThreadedServer, serve_app, serve_cli

MODEL = "breast-cancer"
INFER = f"/v2/models/{MODEL}/infer"
PREDICT = f"/v1/models/{MODEL}:predict"
LIMIT = 65536
ROW = [round(0.1 * i, 2) for i in range(30)]


@pytest.fixture(scope="module")
def server(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    cache = tmp_path_factory.mktemp("bad-input-cache")
    with serve_cli(
        sample_spec, args=["--max-body-bytes", str(LIMIT)], env={"FERRYMAN_MODEL_CACHE": str(cache)}
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: CliServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def still_serving(client: httpx.Client, sample_models, traffic: np.ndarray):
    """Returns a check that a good request still gets the right answer."""
    x = traffic[:5]
    want = reference_outputs(Path(sample_models.versions["v1"]), {"input": x})
    payload, _ = v2.encode_request({"input": x})

    def check() -> None:
        resp = client.post(INFER, content=payload)
        assert resp.status_code == 200, resp.text
        got = {o["name"]: o["data"] for o in v2.decode_response(resp.content)["outputs"]}
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_array_equal(got["probabilities"], want["probabilities"])

    return check


def tensor(shape: Any, data: Any, *, name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def j(doc: Any) -> bytes:
    return orjson.dumps(doc)


GOOD = tensor([1, 30], ROW)
BIN_X = np.asarray([ROW, ROW], dtype=np.float32)
BIN_BODY, BIN_HL = v2.encode_request({"input": BIN_X}, binary=True)
assert BIN_HL is not None
_short_header = orjson.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 30], "parameters": {"binary_data_size": 12}}
        ]
    }
)

# (method, path, body, headers, status, error substring)
CASES: dict[str, tuple[str, str, bytes | None, dict[str, str], int, str]] = {
    "malformed-json": ("POST", INFER, b'{"inputs": [', {}, 400, "request body: malformed JSON"),
    "empty-body": ("POST", INFER, b"", {}, 400, "request body: malformed JSON"),
    "non-object-body": ("POST", INFER, b"[1, 2, 3]", {}, 400, "request body: must be a JSON object"),
    "missing-inputs": ("POST", INFER, b'{"id": "x"}', {}, 400, "inputs: must be a non-empty list"),
    "input-not-object": ("POST", INFER, b'{"inputs": ["x"]}', {}, 400, "inputs[0]: must be an object"),
    "wrong-rank": (
        "POST",
        INFER,
        j({"inputs": [tensor([30], ROW)]}),
        {},
        400,
        "input 'input': rank 1 (shape [30]) but the model expects rank 2 [-1, 30]",
    ),
    "wrong-fixed-dim": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 29], ROW[:29])]}),
        {},
        400,
        "input 'input': dimension 1 is 29 but the model requires 30",
    ),
    "element-count": (
        "POST",
        INFER,
        j({"inputs": [tensor([2, 30], ROW)]}),
        {},
        400,
        "inputs[0] (input).data: 30 elements do not match shape [2, 30]",
    ),
    "fp32-data-as-bytes": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ROW, datatype="BYTES")]}),
        {},
        400,
        "inputs[0] (input).data: BYTES data must be strings",
    ),
    "floats-as-int64": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ROW, datatype="INT64")]}),
        {},
        400,
        "inputs[0] (input).data: values do not fit datatype INT64",
    ),
    "strings-for-fp32-model": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ["a"] * 30, datatype="BYTES")]}),
        {},
        400,
        "input 'input': datatype BYTES cannot be cast to the model's FP32",
    ),
    "strings-as-fp32": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ["a"] * 30)]}),
        {},
        400,
        "inputs[0] (input).data: values do not fit datatype FP32",
    ),
    "unknown-datatype": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ROW, datatype="FP128")]}),
        {},
        400,
        "inputs[0] (input).datatype: unknown datatype 'FP128'",
    ),
    "out-of-range": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], [1e300] * 30, datatype="FP64")]}),
        {},
        400,
        "input 'input': values out of range for the model's FP32",
    ),
    "wrong-input-name": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], ROW, name="features")]}),
        {},
        400,
        "unexpected input(s) 'features'; model expects ['input']",
    ),
    "extra-input": (
        "POST",
        INFER,
        j({"inputs": [GOOD, tensor([1], [1.0], name="extra")]}),
        {},
        400,
        "unexpected input(s) 'extra'",
    ),
    "duplicate-input": (
        "POST",
        INFER,
        j({"inputs": [GOOD, GOOD]}),
        {},
        400,
        "inputs[1].name: duplicate input",
    ),
    "ragged": (
        "POST",
        INFER,
        j({"inputs": [tensor([2, 30], [ROW, ROW[:29]])]}),
        {},
        400,
        "inputs[0] (input).data: ragged nested list",
    ),
    "nested-shape-mismatch": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], [ROW[:15], ROW[15:]])]}),
        {},
        400,
        "nested data has shape [2, 15] but shape is [1, 30]",
    ),
    "negative-dim": (
        "POST",
        INFER,
        j({"inputs": [tensor([-1, 30], ROW)]}),
        {},
        400,
        "inputs[0] (input).shape: must be a list of non-negative integers",
    ),
    "too-many-elements": (
        "POST",
        INFER,
        j({"inputs": [tensor([1_000_000, 30], [])]}),
        {},
        400,
        "elements exceed the limit",
    ),
    "unknown-output": (
        "POST",
        INFER,
        j({"inputs": [GOOD], "outputs": [{"name": "nope"}]}),
        {},
        400,
        "outputs: unknown output(s) ['nope']; model outputs are ['label', 'probabilities']",
    ),
    "binary-size-mismatch": (
        "POST",
        INFER,
        _short_header + BIN_X.tobytes(),
        {"Inference-Header-Content-Length": str(len(_short_header))},
        400,
        "binary_data_size 12 does not match shape [2, 30] of FP32 (240 bytes)",
    ),
    "binary-header-beyond-body": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "100000"},
        400,
        "Inference-Header-Content-Length: 100000 exceeds the body length",
    ),
    "binary-header-not-int": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "12abc"},
        400,
        "Inference-Header-Content-Length: must be a non-negative integer (the byte length of "
        "the JSON header), got '12abc'",
    ),
    "binary-header-negative": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "-3"},
        400,
        "Inference-Header-Content-Length: must be a non-negative integer",
    ),
    "binary-header-fraction": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "12.5"},
        400,
        "Inference-Header-Content-Length: must be a non-negative integer",
    ),
    "binary-header-huge": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "9" * 40},
        400,
        "Inference-Header-Content-Length: " + "9" * 40 + " is too large",
    ),
    "binary-header-short": (
        "POST",
        INFER,
        BIN_BODY,
        {"Inference-Header-Content-Length": "10"},
        400,
        "Inference-Header-Content-Length (10): the first 10 bytes are not the JSON header",
    ),
    "binary-header-missing": (
        "POST",
        INFER,
        BIN_BODY,
        {},
        400,
        "Inference-Header-Content-Length header is missing: a body with binary tensor data "
        "(binary_data_size) needs it",
    ),
    "binary-header-missing-json-only": (
        "POST",
        INFER,
        BIN_BODY[:BIN_HL],
        {},
        400,
        "Inference-Header-Content-Length header is missing: inputs[0] (input) has binary_data_size",
    ),
    "binary-nan": (
        "POST",
        INFER,
        BIN_BODY[:BIN_HL] + np.full((2, 30), np.nan, np.float32).tobytes(),
        {"Inference-Header-Content-Length": str(BIN_HL)},
        400,
        "inputs[0] (input): NaN in FP32 data: non-finite values are not accepted",
    ),
    "binary-inf": (
        "POST",
        INFER,
        BIN_BODY[:BIN_HL] + np.full((2, 30), -np.inf, np.float32).tobytes(),
        {"Inference-Header-Content-Length": str(BIN_HL)},
        400,
        "inputs[0] (input): Infinity in FP32 data: non-finite values are not accepted",
    ),
    "json-nan": (
        "POST",
        INFER,
        j({"inputs": [GOOD]}).replace(b"0.1,", b"NaN,", 1),
        {},
        400,
        "NaN and Infinity are not JSON numbers",
    ),
    "json-infinity": (
        "POST",
        INFER,
        j({"inputs": [GOOD]}).replace(b"0.1,", b"-Infinity,", 1),
        {},
        400,
        "NaN and Infinity are not JSON numbers",
    ),
    "fp32-overflow": (
        "POST",
        INFER,
        j({"inputs": [tensor([1, 30], [1e39] * 30)]}),
        {},
        400,
        "inputs[0] (input).data: values out of range for FP32",
    ),
    "binary-data-truncated": (
        "POST",
        INFER,
        BIN_BODY[:-8],
        {"Inference-Header-Content-Length": str(BIN_HL)},
        400,
        "binary_data_size: exceeds the binary data in the body",
    ),
    "binary-trailing-bytes": (
        "POST",
        INFER,
        BIN_BODY + b"xx",
        {"Inference-Header-Content-Length": str(BIN_HL)},
        400,
        "binary data: 2 trailing bytes not claimed by any input",
    ),
    "unknown-model": (
        "POST",
        "/v2/models/nope/infer",
        j({"inputs": [GOOD]}),
        {},
        404,
        "model 'nope' not found",
    ),
    "unknown-version": (
        "POST",
        f"/v2/models/{MODEL}/versions/v9/infer",
        j({"inputs": [GOOD]}),
        {},
        404,
        "model 'breast-cancer' has no version 'v9' (versions: ['v1', 'v2'])",
    ),
    "unknown-version-bad-body": (
        "POST",
        f"/v2/models/{MODEL}/versions/v9/infer",
        b"{}",
        {},
        404,
        "has no version 'v9'",
    ),
    "empty-model-name": ("POST", "/v2/models//infer", j({"inputs": [GOOD]}), {}, 404, "model name is empty"),
    "get-unknown-model": ("GET", "/v2/models/nope", None, {}, 404, "model 'nope' not found"),
    "get-unknown-version": ("GET", f"/v2/models/{MODEL}/versions/v9", None, {}, 404, "has no version 'v9'"),
    "get-unknown-version-ready": (
        "GET",
        f"/v2/models/{MODEL}/versions/v9/ready",
        None,
        {},
        404,
        "has no version 'v9'",
    ),
    "v1-get-unknown-model": ("GET", "/v1/models/nope", None, {}, 404, "model 'nope' not found"),
    "body-over-limit": (
        "POST",
        INFER,
        b" " * (LIMIT + 1),
        {},
        413,
        f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes",
    ),
    "v1-malformed": ("POST", PREDICT, b"{nope", {}, 400, "request body: malformed JSON"),
    "v1-not-object": ("POST", PREDICT, b"[[1, 2]]", {}, 400, "request body: must be a JSON object"),
    "v1-empty-instances": (
        "POST",
        PREDICT,
        b'{"instances": []}',
        {},
        400,
        "instances: must be a non-empty list",
    ),
    "v1-ragged": ("POST", PREDICT, j({"instances": [ROW, ROW[:3]]}), {}, 400, "instances: ragged instances"),
    "v1-strings": (
        "POST",
        PREDICT,
        j({"instances": [["a"] * 30]}),
        {},
        400,
        "instances: instances must be numbers for this model's FP32 input, got strings",
    ),
    "v1-nan": ("POST", PREDICT, b'{"instances": [[NaN]]}', {}, 400, "NaN and Infinity are not JSON numbers"),
    "v1-wrong-width": (
        "POST",
        PREDICT,
        j({"instances": [ROW[:29]]}),
        {},
        400,
        "input 'input': dimension 1 is 29 but the model requires 30",
    ),
    "v1-unknown-field": (
        "POST",
        PREDICT,
        j({"instances": [{"input": ROW, "x": 1}]}),
        {},
        400,
        "instances: unexpected input(s) ['x']",
    ),
    "v1-unknown-model": (
        "POST",
        "/v1/models/nope:predict",
        j({"instances": [ROW]}),
        {},
        404,
        "model 'nope' not found",
    ),
    "v1-unknown-version": (
        "POST",
        f"/v1/models/{MODEL}/versions/v9:predict",
        j({"instances": [ROW]}),
        {},
        404,
        "has no version 'v9'",
    ),
    "v1-body-over-limit": ("POST", PREDICT, b" " * (2 * LIMIT), {}, 413, "exceeds the limit of 65536 bytes"),
    "put-infer": ("PUT", INFER, j({"inputs": [GOOD]}), {}, 405, "method PUT not allowed"),
    "delete-server": ("DELETE", "/v2", None, {}, 405, "method DELETE not allowed"),
    "get-infer": ("GET", INFER, None, {}, 405, f"method GET not allowed on {INFER}: predictions take POST"),
    "get-v1-predict": ("GET", PREDICT, None, {}, 405, "method GET not allowed"),
    "post-health": ("POST", "/v2/health/live", b"{}", {}, 404, "no route for POST /v2/health/live"),
    "unknown-route": ("GET", "/v3/anything", None, {}, 404, "no route for GET /v3/anything"),
    "unknown-model-subroute": (
        "POST",
        f"/v2/models/{MODEL}/explain",
        b"{}",
        {},
        404,
        f"no route for POST /v2/models/{MODEL}/explain",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    client: httpx.Client, still_serving, case: str
) -> None:
    method, path, body, headers, status, message = CASES[case]
    resp = client.request(method, path, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert list(doc) == ["error"]
    assert message in doc["error"], doc["error"]
    still_serving()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_prediction_path_says_which_method_it_takes(client: httpx.Client, method: str) -> None:
    resp = client.request(method, INFER)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST", resp.text


def test_streamed_body_over_the_limit_is_413(client: httpx.Client, still_serving) -> None:
    """No Content-Length (chunked upload): the limit is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * 16384

    resp = client.post(INFER, content=chunks())
    assert resp.status_code == 413
    assert resp.json() == {"error": f"request body exceeds the limit of {LIMIT} bytes"}
    still_serving()


def test_missing_input_of_a_multi_input_model(tiny_models: dict[str, Path]) -> None:
    repo = ModelRepository()
    repo.add(OnnxModel.load(tiny_models["two_inputs"], name="pair", version="1"))
    repo.ready = True
    with serve_app(InferenceApp(DataPlane(repo))) as srv:
        resp = httpx.post(
            f"{srv.url}/v2/models/pair/infer", json={"inputs": [tensor([1, 2], [1.0, 2.0], name="a")]}
        )
        assert resp.status_code == 400
        assert resp.json() == {"error": "missing input(s) 'b'; model expects ['a', 'b']"}
        resp = httpx.post(f"{srv.url}/v1/models/pair:predict", json={"instances": [{"a": [1.0, 2.0]}]})
        assert resp.status_code == 400
        assert resp.json() == {"error": "instances: missing input 'b'"}
        ok = httpx.post(
            f"{srv.url}/v2/models/pair/infer",
            json={"inputs": [tensor([1, 2], [1.0, 2.0], name="a"), tensor([1, 2], [3.0, 4.0], name="b")]},
        )
        assert ok.status_code == 200
        assert ok.json()["outputs"][0]["data"] == [4.0, 6.0]


@pytest.fixture
def not_ready_server(tiny_models: dict[str, Path]) -> Iterator[ThreadedServer]:
    repo = ModelRepository()
    repo.add(OnnxModel.load(tiny_models["add_one"], name="m", version="1"))
    assert repo.ready is False  # e.g. still loading
    with serve_app(InferenceApp(DataPlane(repo))) as srv:
        yield srv


def test_not_ready_is_503(not_ready_server: ThreadedServer) -> None:
    url = not_ready_server.url
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    ready = httpx.get(f"{url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    model_ready = httpx.get(f"{url}/v2/models/m/ready")
    assert (model_ready.status_code, model_ready.json()) == (503, {"name": "m", "ready": False})
    for path, body in (
        (f"{url}/v2/models/m/infer", {"inputs": [tensor([1, 3], [1, 2, 3], name="x")]}),
        (f"{url}/v1/models/m:predict", {"instances": [[1, 2, 3]]}),
    ):
        resp = httpx.post(path, json=body)
        assert resp.status_code == 503
        assert resp.json() == {"error": "server is not ready"}


def raw_exchange(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := s.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage-line"),
        pytest.param(bytes(range(256)) * 4, id="binary-noise"),
        pytest.param(
            b"POST " + INFER.encode() + b' HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"inp',
            id="truncated-body",
        ),
        pytest.param(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Le", id="truncated-headers"
        ),
        pytest.param(b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", id="bad-content-length"),
        pytest.param(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad-chunk",
        ),
        pytest.param(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="huge-url"),
    ],
)
def test_garbage_on_the_socket_does_not_crash_the_server(
    server: CliServer, still_serving, data: bytes
) -> None:
    answer = raw_exchange(server.port, data)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert server.alive()
    still_serving()


def test_the_server_log_has_no_tracebacks(server: CliServer, client: httpx.Client) -> None:
    """Runs after the matrix in this module: nothing above was a 500 or an unhandled exception."""
    assert client.get("/v2/health/ready").status_code == 200
    log = server.output()
    assert "Traceback" not in log, log[-3000:]
    assert "RuntimeWarning" not in log, log[-3000:]  # e.g. numpy's overflow warning for 1e39 as FP32
    assert "internal error" not in log
