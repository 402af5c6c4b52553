"""``ferryman serve --grpc-port`` called with the standard client, unchanged (``tritonclient.grpc``), over
real sockets: health, metadata, ModelInfer with raw and typed contents giving REST's outputs, pins, every
error status, over-size messages, metrics with the protocol label, a fuzz over the wire that never gets
INTERNAL, and adaptive batching (a full queue is RESOURCE_EXHAUSTED)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
import yaml
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers import models
from tests.helpers.ports import free_port
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.servers import GRPC_TRANSPORTS, CliServer, serve_cli
from tests.unit.test_grpc_codec import _messages

MODEL = "breast-cancer"
MAX_BODY = 65_536
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module", params=GRPC_TRANSPORTS)
def served(
    sample_spec: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[CliServer, str]]:
    port = free_port()
    cache = tmp_path_factory.mktemp("grpc-cache")
    with serve_cli(
        sample_spec,
        args=["--grpc-port", str(port), "--max-body-bytes", str(MAX_BODY), "--grpc-transport", request.param],
        env={"FERRYMAN_MODEL_CACHE": str(cache)},
    ) as server:
        yield server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(served: tuple[CliServer, str]) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(served[1])
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(served: tuple[CliServer, str]) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _input(rows: np.ndarray, *, name: str = "input", datatype: str = "FP32") -> tc.InferInput:
    item = tc.InferInput(name, list(rows.shape), datatype)
    item.set_data_from_numpy(rows)  # raw_input_contents: what tritonclient sends by default
    return item


def _status(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), str(caught.value.message())


def _rpc_error(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    err: Any = caught.value
    return err.code(), err.details()


def _typed(rows: np.ndarray, **fields: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=MODEL, **fields)
    item = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    item.contents.fp32_contents.extend(rows.ravel().tolist())
    return request


def test_live_ready_and_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "v2")
    server = client.get_server_metadata()
    assert server.name == "ferryman"
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["versions"] == ["v1", "v2"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "30"]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert _status(lambda: client.is_model_ready("nope"))[0] == "StatusCode.NOT_FOUND"
    assert _status(lambda: client.get_model_metadata(MODEL, "v9"))[0] == "StatusCode.NOT_FOUND"


def test_raw_and_typed_contents_answer_what_rest_answers(
    served: tuple[CliServer, str], client: tc.InferenceServerClient, stub: Any, traffic: np.ndarray
) -> None:
    rows = traffic[:5].astype(np.float32)
    rest = httpx.post(
        f"{served[0].url}/v2/models/{MODEL}/infer",
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 30], "data": rows.ravel().tolist()}]
        },
    ).json()
    expected = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in rest["outputs"]}

    raw = client.infer(MODEL, [_input(rows)], request_id="r-1")
    response = raw.get_response()
    assert (response.model_version, response.id) == (rest["model_version"], "r-1")
    assert len(response.raw_output_contents) == 2  # a raw request gets raw outputs
    np.testing.assert_array_equal(raw.as_numpy("label"), expected["label"])
    np.testing.assert_array_equal(raw.as_numpy("probabilities"), expected["probabilities"].astype(np.float32))

    typed = stub.ModelInfer(_typed(rows, outputs=[{"name": "probabilities"}]))
    assert not typed.raw_output_contents and [o.name for o in typed.outputs] == ["probabilities"]
    assert list(typed.outputs[0].shape) == [5, 2]
    got = np.array(typed.outputs[0].contents.fp32_contents, np.float32).reshape(5, 2)
    np.testing.assert_array_equal(got, expected["probabilities"].astype(np.float32))


def test_model_version_pins_and_an_unknown_version_is_not_found(
    client: tc.InferenceServerClient, traffic: np.ndarray
) -> None:
    rows = traffic[:1].astype(np.float32)
    assert client.infer(MODEL, [_input(rows)], model_version="v2").get_response().model_version == "v2"
    assert client.infer(MODEL, [_input(rows)]).get_response().model_version == "v1"  # the stable default
    code, message = _status(lambda: client.infer(MODEL, [_input(rows)], model_version="v9"))
    assert code == "StatusCode.NOT_FOUND" and "v9" in message
    code, message = _status(lambda: client.infer("nope", [_input(rows)]))
    assert code == "StatusCode.NOT_FOUND" and "'nope' not found" in message


def test_bad_inputs_are_invalid_argument_with_precise_messages(
    client: tc.InferenceServerClient, stub: Any, traffic: np.ndarray
) -> None:
    rows = traffic[:2].astype(np.float32)
    cases = {
        "wrong name": lambda: client.infer(MODEL, [_input(rows, name="features")]),
        "wrong shape": lambda: client.infer(MODEL, [_input(rows[:, :5])]),
        "wrong datatype": lambda: client.infer(
            MODEL, [_input(np.array([[b"a"] * 30], np.object_), datatype="BYTES")]
        ),
    }
    expected = {
        "wrong name": "unexpected input(s) 'features'; model expects ['input']",
        "wrong shape": "input 'input': dimension 1 is 5 but the model requires 30",
        "wrong datatype": "input 'input': datatype BYTES cannot be cast to the model's FP32",
    }
    for what, call in cases.items():
        code, message = _status(call)
        assert code == "StatusCode.INVALID_ARGUMENT", what
        assert expected[what] in message, (what, message)

    short = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[rows.tobytes()[:-4]])
    short.inputs.add(name="input", datatype="FP32", shape=[2, 30])
    code, message = _rpc_error(lambda: stub.ModelInfer(short))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        message == "raw_input_contents[0] (input): 236 bytes, but shape [2, 30] of FP32 needs 240 bytes "
        "(60 elements of 4)"
    )

    counted = _typed(rows)
    del counted.inputs[0].contents.fp32_contents[-1]
    code, message = _rpc_error(lambda: stub.ModelInfer(counted))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0] (input).contents: 59 fp32_contents elements, but shape [2, 30] needs 60",
    )
    code, message = _rpc_error(lambda: stub.ModelInfer(service_pb2.ModelInferRequest(inputs=counted.inputs)))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "model_name: must be set")


def test_malformed_bytes_and_over_size_messages(served: tuple[CliServer, str], traffic: np.ndarray) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        call = channel.unary_unary(INFER)  # bytes as they are
        code, message = _rpc_error(lambda: call(b"\xff\xff\xff\xff"))
        assert (
            code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid inference.ModelInferRequest" in message
        )
        code, _ = _rpc_error(
            lambda: channel.unary_unary("/inference.GRPCInferenceService/ModelReady")(b"\x0a\xff")
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    big = np.zeros((600, 30), np.float32)  # 72 kB of raw contents over the 64 kB limit
    with tc.InferenceServerClient(served[1]) as client:
        code, message = _status(lambda: client.infer(MODEL, [_input(big)]))
    assert code == "StatusCode.RESOURCE_EXHAUSTED" and str(MAX_BODY) in message


def _requests(url: str) -> dict[tuple[str, str], float]:
    samples = parse_exposition(httpx.get(f"{url}/metrics").text)
    return {
        (p, c): sample_sum(samples, "ferryman_requests_total", protocol=p, code=c)
        for p in ("grpc", "grpc-raw", "v2")
        for c in ("200", "400")
    }


def test_metrics_count_grpc_requests_under_their_protocol(
    served: tuple[CliServer, str], stub: Any, client: tc.InferenceServerClient, traffic: np.ndarray
) -> None:
    before = _requests(served[0].url)
    rows = traffic[:1].astype(np.float32)
    for _ in range(7):
        client.infer(MODEL, [_input(rows)])
    for _ in range(3):
        stub.ModelInfer(_typed(rows))
    _status(lambda: client.infer(MODEL, [_input(rows[:, :3])]))
    after = _requests(served[0].url)
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        ("grpc-raw", "200"): 7,
        ("grpc", "200"): 3,
        ("grpc-raw", "400"): 1,
        ("grpc", "400"): 0,
        ("v2", "200"): 0,
        ("v2", "400"): 0,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=_messages())
def test_fuzzed_messages_over_the_wire_never_get_internal(stub: Any, message: Any) -> None:
    if message.model_name:
        message.model_name = MODEL
    try:
        stub.ModelInfer(service_pb2.ModelInferRequest.FromString(message.SerializeToString()))
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), err.details()


# -- adaptive batching ------------------------------------------------------------------------------
def _slow_spec(tmp_path: Path, *, queue: int, seconds: float = 0.1) -> Path:
    model = models.slow_model(tmp_path / "slow.onnx", target_seconds=seconds)
    spec = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "slow"},
        "spec": {
            "versions": [{"name": "v1", "uri": str(model)}],
            "drift": {"enabled": False},
            "batching": {"maxBatchSize": 4, "maxQueueSize": queue},
        },
    }
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_batching_applies_to_grpc_and_a_full_queue_is_resource_exhausted(
    tmp_path: Path, transport: str
) -> None:
    port = free_port()
    args = ["--grpc-port", str(port), "--grpc-transport", transport]
    with serve_cli(_slow_spec(tmp_path, queue=1), args=args) as server:
        rows = np.zeros((1, 30), np.float32)

        def call(_: int) -> tuple[str, str]:
            with tc.InferenceServerClient(f"127.0.0.1:{port}") as c:
                try:
                    c.infer("slow", [_input(rows)])
                    return "OK", ""
                except InferenceServerException as err:
                    return str(err.status()), str(err.message())

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(call, range(16)))
        samples = parse_exposition(httpx.get(f"{server.url}/metrics").text)
    codes = {code for code, _ in outcomes}
    assert codes == {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, (
        outcomes
    )  # one running, one queued, the rest refused
    assert all("batch queue full" in m for c, m in outcomes if c != "OK")
    ok = sum(1 for c, _ in outcomes if c == "OK")
    # every answered gRPC request went through the version's batcher (counted once in ferryman_batch_size)
    assert sample_sum(samples, "ferryman_batch_size_sum", model="slow") == ok
    assert sample_sum(samples, "ferryman_requests_total", protocol="grpc-raw", code="503") == 16 - ok
