"""Adaptive batching over real sockets: ``ferryman serve``'s app (batchers, metrics) under uvicorn with
ferryman's direct-dispatch protocol, many concurrent clients.

What must hold whatever the timing: every answer is the one its own request would get alone (bit for bit:
these models compute each row independently), multi-row requests and requests asking for different outputs
share runs safely, requests of different shapes are never merged, a request the model rejects fails alone,
clients that go away leave the others unaffected, a full queue answers 503 with Retry-After, and pipelined
requests on one connection are answered in order. Whether runs were merged is read from the batcher's own
counts (requests > runs), never from timings.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import yaml
from onnx import TensorProto, helper

from ferryman_runtimes.asgi.direct import PROTOCOL
from ferryman_runtimes.native.server import NativeApp, build_app
from tests.helpers import models
from tests.helpers.gateway import wait_until
from tests.helpers.servers import ThreadedServer, serve_app

CLIENTS = 16


def write_spec(directory: Path, name: str, model: Path, *, batching: dict[str, Any] | None) -> Path:
    spec: dict[str, Any] = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"versions": [{"name": "v1", "uri": str(model)}], "drift": {"enabled": False}},
    }
    if batching is not None:
        spec["spec"]["batching"] = batching
    path = directory / f"{name}-{'batched' if batching else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ferryman.examples_compute import cnn_onnx

    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    path.write_bytes(cnn_onnx(seed=5))
    return path


@pytest.fixture(scope="module")
def traffic() -> np.ndarray:
    from ferryman.examples_compute import digits

    return digits()[1]


def serve_spec(spec: Path) -> Any:
    app = build_app(spec)
    assert isinstance(app, NativeApp)
    return app, serve_app(app, http=PROTOCOL, loop="uvloop")


@pytest.fixture(scope="module")
def batched(
    cnn_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NativeApp, ThreadedServer]]:
    app, server = serve_spec(
        write_spec(
            tmp_path_factory.mktemp("spec"), "cnn", cnn_path, batching={"maxBatchSize": 16, "maxDelayMs": 2}
        )
    )
    with server as s:
        yield app, s


@pytest.fixture(scope="module")
def plain(cnn_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    app, server = serve_spec(write_spec(tmp_path_factory.mktemp("spec"), "cnn", cnn_path, batching=None))
    assert app.batchers == {}
    with server as s:
        yield s


def v2(
    rows: np.ndarray,
    *,
    outputs: list[str] | None = None,
    request_id: str | None = None,
    name: str = "input",
    datatype: str = "FP32",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    if request_id is not None:
        body["id"] = request_id
    return body


def hammer(url: str, bodies: list[dict[str, Any]], path: str) -> list[httpx.Response]:
    """POST every body from CLIENTS threads at once (each with its own keep-alive connection); in order."""
    local = threading.local()

    def post(body: dict[str, Any]) -> httpx.Response:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=60.0)
        return client.post(path, json=body)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(post, bodies))


def reference(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def test_batched_answers_equal_unbatched_ones_bit_for_bit_and_each_goes_to_its_own_request(
    batched: tuple[NativeApp, ThreadedServer], plain: ThreadedServer, cnn_path: Path, traffic: np.ndarray
) -> None:
    app, server = batched
    [batcher] = app.batchers.values()
    runs, requests = batcher.runs, batcher.requests
    rng = np.random.default_rng(7)
    bodies, wanted = [], []
    for i in range(240):
        rows = traffic[rng.integers(0, len(traffic), size=int(rng.integers(1, 5)))]  # 1-4 rows a request
        outputs = [["label"], ["probabilities"], None][i % 3]  # different outputs: different batches
        bodies.append(v2(rows, outputs=outputs, request_id=f"r{i}"))
        wanted.append((rows, outputs))
    got = hammer(server.url, bodies, "/v2/models/cnn/infer")
    alone = hammer(plain.url, bodies, "/v2/models/cnn/infer")
    for i, (reply, unbatched, (rows, outputs)) in enumerate(zip(got, alone, wanted, strict=True)):
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["id"] == f"r{i}" and answer["model_version"] == "v1"
        assert answer["outputs"] == unbatched.json()["outputs"]  # the same numbers, to the last bit of JSON
        truth = reference(cnn_path, {"input": rows})
        assert [o["name"] for o in answer["outputs"]] == (outputs or ["label", "probabilities"])
        for out in answer["outputs"]:
            want = truth[out["name"]]
            assert out["shape"] == list(want.shape)
            assert np.array_equal(np.asarray(out["data"], dtype=want.dtype).reshape(want.shape), want)
    assert batcher.requests - requests == len(bodies)
    assert batcher.runs - runs < len(bodies)  # some runs answered several requests


def test_binary_and_v1_requests_are_batched_too(
    batched: tuple[NativeApp, ThreadedServer], cnn_path: Path, traffic: np.ndarray
) -> None:
    _, server = batched
    rows = traffic[:3]
    bodies = [{"instances": rows.tolist()}] * 48
    replies = hammer(server.url, bodies, "/v1/models/cnn:predict")
    want = reference(cnn_path, {"input": rows})
    for r in replies:
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert len(predictions) == 3
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 64],
                    "parameters": {"binary_data_size": 3 * 64 * 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    r = httpx.post(
        f"{server.url}/v2/models/cnn/infer",
        content=header + rows.astype("<f4").tobytes(),
        headers={"inference-header-content-length": str(len(header))},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    hl = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:hl])
    offset = hl
    for out in meta["outputs"]:
        size = out["parameters"]["binary_data_size"]
        data = np.frombuffer(r.content[offset : offset + size], dtype=want[out["name"]].dtype)
        assert np.array_equal(data.reshape(out["shape"]), want[out["name"]])
        offset += size


def test_bad_requests_are_rejected_alone(
    batched: tuple[NativeApp, ThreadedServer], traffic: np.ndarray
) -> None:
    _, server = batched
    good = v2(traffic[:2])
    bad = [
        v2(traffic[:1, :10]),  # wrong width
        v2(traffic[:1], name="nope"),  # unknown input
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ["x"] * 64}]},
        {"inputs": "not a list"},
    ]
    bodies = [bad[i % 4] if i % 3 == 0 else good for i in range(120)]
    replies = hammer(server.url, bodies, "/v2/models/cnn/infer")
    first = next(r.json() for b, r in zip(bodies, replies, strict=True) if b is good)
    for body, reply in zip(bodies, replies, strict=True):
        if body is good:
            assert reply.status_code == 200 and reply.json() == first
        else:
            assert reply.status_code == 400, reply.text
            assert "error" in reply.json()


@pytest.fixture(scope="module")
def shapes_and_lookup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThreadedServer, ThreadedServer]]:
    """One server, two models: ``rowsum`` (input [N, M], M free) and ``lookup`` (fails on an index past 8)."""
    d = tmp_path_factory.mktemp("odd-models")
    rowsum = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
        "rowsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    table = helper.make_tensor("table", TensorProto.FLOAT, [8, 2], [float(i) for i in range(16)])
    lookup = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["out"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        initializer=[table],
    )
    paths = {
        name: models._save(graph, d / f"{name}.onnx")
        for name, graph in (("rowsum", rowsum), ("lookup", lookup))
    }
    batching = {"maxBatchSize": 64, "maxDelayMs": 5}
    apps = {name: build_app(write_spec(d, name, path, batching=batching)) for name, path in paths.items()}

    with (
        serve_app(apps["rowsum"], http=PROTOCOL) as rowsum_server,
        serve_app(apps["lookup"], http=PROTOCOL) as lookup_server,
    ):
        yield rowsum_server, lookup_server


def test_requests_of_different_shapes_are_never_merged(shapes_and_lookup: Any) -> None:
    server, _ = shapes_and_lookup
    rng = np.random.default_rng(3)
    # small integers: every sum is exact, whatever the order it is added in
    rows = [
        rng.integers(-50, 50, size=(int(rng.integers(1, 4)), int(rng.integers(1, 6)))).astype(np.float32)
        for _ in range(200)
    ]
    replies = hammer(server.url, [v2(r, name="x") for r in rows], "/v2/models/rowsum/infer")
    for r, reply in zip(rows, replies, strict=True):
        assert reply.status_code == 200, reply.text  # a merge across widths could not even be concatenated
        [out] = reply.json()["outputs"]
        assert np.array_equal(np.asarray(out["data"], dtype=np.float32), r.sum(axis=1, dtype=np.float32))


def test_a_request_the_model_rejects_never_fails_its_batch_mates(shapes_and_lookup: Any) -> None:
    _, server = shapes_and_lookup
    table = np.arange(16, dtype=np.float32).reshape(8, 2)
    indices = [[99] if i % 5 == 0 else [i % 8, (i * 3) % 8] for i in range(200)]
    replies = hammer(
        server.url,
        [v2(np.array(ix, np.int64), name="idx", datatype="INT64") for ix in indices],
        "/v2/models/lookup/infer",
    )
    for ix, reply in zip(indices, replies, strict=True):
        if ix == [99]:
            assert reply.status_code in (400, 500) and "error" in reply.json()
        else:
            assert reply.status_code == 200, reply.text
            [out] = reply.json()["outputs"]
            assert np.array_equal(np.asarray(out["data"], dtype=np.float32).reshape(-1, 2), table[ix])


def raw_post(body: bytes, path: str = "/v2/models/cnn/infer") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    sock.settimeout(30)
    buffer = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk
            buffer += chunk
        out.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return out


def test_pipelined_requests_are_answered_in_order_even_behind_a_batched_one(
    batched: tuple[NativeApp, ThreadedServer], traffic: np.ndarray
) -> None:
    _, server = batched
    first, second = (
        orjson.dumps(v2(traffic[:1], request_id="first")),
        orjson.dumps(v2(traffic[1:3], request_id="second")),
    )
    health = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw_post(first) + health + raw_post(second) + raw_post(b"{broken"))
        answers = read_responses(sock, 4)
    assert [status for status, _ in answers] == [200, 200, 200, 400]
    assert orjson.loads(answers[0][1])["id"] == "first"
    assert orjson.loads(answers[1][1]) == {"ready": True}
    assert orjson.loads(answers[2][1])["id"] == "second"
    assert orjson.loads(answers[2][1])["outputs"][0]["shape"] == [2]


def test_clients_that_disconnect_leave_their_batch_mates_unaffected(
    batched: tuple[NativeApp, ThreadedServer], traffic: np.ndarray
) -> None:
    app, server = batched
    body = raw_post(orjson.dumps(v2(traffic[:1])))
    stop = threading.Event()

    def leave_early() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(body)  # and go: the answer has nowhere to go

    quitters = [threading.Thread(target=leave_early) for _ in range(4)]
    for t in quitters:
        t.start()
    try:
        replies = hammer(
            server.url,
            [v2(traffic[i % 50 : i % 50 + 1], request_id=str(i)) for i in range(150)],
            "/v2/models/cnn/infer",
        )
    finally:
        stop.set()
        for t in quitters:
            t.join()
    for i, reply in enumerate(replies):
        assert reply.status_code == 200 and reply.json()["id"] == str(i)
    wait_until(lambda: app.in_flight == 0, timeout=30)  # every slot was given back
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_a_full_batch_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    model = models.slow_model(tmp_path / "slow.onnx", target_seconds=0.1)
    app = build_app(write_spec(tmp_path, "slow", model, batching={"maxBatchSize": 1, "maxQueueSize": 1}))
    rows = np.zeros((1, 30), np.float32)
    with serve_app(app, http=PROTOCOL) as server:
        replies = hammer(server.url, [v2(rows)] * CLIENTS, "/v2/models/slow/infer")
    codes = sorted(r.status_code for r in replies)
    assert set(codes) == {200, 503}  # one running, one queued, the rest refused
    for r in replies:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "queue full" in r.json()["error"]


def test_the_kserve_contract_runtime_batches_itself(cnn_path: Path, traffic: np.ndarray) -> None:
    from ferryman.errors import SpecError
    from ferryman_runtimes.kserve.__main__ import parse
    from ferryman_runtimes.kserve.server import build_app as kserve_app

    options = parse(
        [
            f"--model_dir={cnn_path}",
            "--model_name=cnn",
            "--model_version=v3",
            '--batching={"maxBatchSize": 8, "maxDelayMs": 1}',
        ]
    )
    app = kserve_app(options)
    [batcher] = app.batchers.values()
    assert batcher.queue.max_batch_size == 8
    with serve_app(app, http=PROTOCOL) as server:
        replies = hammer(
            server.url, [v2(traffic[i : i + 1], request_id=str(i)) for i in range(64)], "/v2/models/cnn/infer"
        )
    for i, reply in enumerate(replies):
        assert reply.status_code == 200 and reply.json()["id"] == str(i)
        want = reference(cnn_path, {"input": traffic[i : i + 1]})["label"]
        assert reply.json()["outputs"][0]["data"] == want.tolist()
    assert batcher.requests == 64
    with pytest.raises(SpecError, match="maxBatchSize"):
        kserve_app(parse([f"--model_dir={cnn_path}", "--model_name=cnn", '--batching={"maxBatchSize": 0}']))


def test_the_cli_exports_a_compute_bound_example_whose_spec_batches(tmp_path: Path) -> None:
    from tests.helpers.servers import run_ferryman, serve_cli

    listed = run_ferryman(["examples", "list"])
    assert listed.returncode == 0 and all(
        n in listed.stdout for n in ("breast-cancer", "digits-mlp", "digits-cnn")
    )
    out = tmp_path / "cnn"
    exported = run_ferryman(["examples", "export", str(out), "--model", "digits-cnn"], timeout=300)
    assert exported.returncode == 0, exported.stderr
    spec = yaml.safe_load((out / "deployment.yaml").read_text())
    assert spec["metadata"]["name"] == "digits-cnn" and spec["spec"]["batching"]["maxBatchSize"] == 32
    assert [v["name"] for v in spec["spec"]["versions"]] == ["v1", "v2"]
    assert all(
        (out / "models" / v / f).is_file() for v in ("v1", "v2") for f in ("model.onnx", "reference.npy")
    )
    rows = np.load(out / "traffic.npy")
    with serve_cli(out / "deployment.yaml") as server:
        replies = hammer(
            server.url,
            [v2(rows[i : i + 1], request_id=str(i)) for i in range(96)],
            "/v2/models/digits-cnn/infer",
        )
        assert all(r.status_code == 200 and r.json()["id"] == str(i) for i, r in enumerate(replies))
        exposition = httpx.get(f"{server.url}/metrics").text
    count = next(
        float(line.split()[-1])
        for line in exposition.splitlines()
        if line.startswith('ferryman_batch_size_count{model="digits-cnn",version="v1"}')
    )
    total = next(
        float(line.split()[-1])
        for line in exposition.splitlines()
        if line.startswith('ferryman_batch_size_sum{model="digits-cnn",version="v1"}')
    )
    assert total == 96 and 1 <= count <= 96  # every request counted once, in runs of one or more
    assert "ferryman_batch_queue_delay_seconds_count" in exposition
    unknown = run_ferryman(["examples", "export", str(tmp_path / "x"), "--model", "nope"])
    assert unknown.returncode == 2 and "unknown example 'nope'" in unknown.stdout + unknown.stderr
