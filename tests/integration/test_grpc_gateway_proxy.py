"""`ferryman gateway --grpc-port`: the cluster gateway routes gRPC by the operator's routes.json.

Real processes only, as on a cluster: one `ferryman serve --grpc-port` per version (single-version specs),
the gateway reading a routes file with ``backends`` and ``grpcBackends``, ``tritonclient.grpc`` and a raw
gRPC channel as callers. The routes file is rewritten between tests (weights, sticky key, shadow) and the
gateway's ``/metrics`` are read back: gRPC goes through the same policy and counters as REST.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from ferryman.routes import table_to_dict
from ferryman.routing import initial_table
from ferryman.spec import StickyKey, StickySource, load_deployment
from ferryman_runtimes.grpc import inference_pb2 as pb
from tests.helpers.gateway import arms_for, wait_until
from tests.helpers.h2raw import RawH2
from tests.helpers.ports import free_port
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.security import ferryman_process
from tests.helpers.servers import GRPC_TRANSPORTS, serve_cli
from tests.integration.test_gateway_proxy import _single_version_spec

MODEL = "breast-cancer"
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module", params=GRPC_TRANSPORTS)
def topology(
    sample_spec: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("grpc-proxy")
    specs = {v: _single_version_spec(sample_spec, v, work) for v in ("v1", "v2")}
    ports = {v: free_port() for v in specs}
    with (
        serve_cli(specs["v1"], args=["--grpc-port", str(ports["v1"])]) as v1,
        serve_cli(specs["v2"], args=["--grpc-port", str(ports["v2"])]) as v2,
    ):
        topo: dict[str, Any] = {
            "spec": sample_spec,
            "routes": work / "routes.json",
            "servers": {"v1": v1, "v2": v2},
            "backends": {"v1": v1.url, "v2": v2.url},
            "grpc_backends": {v: f"127.0.0.1:{p}" for v, p in ports.items()},
        }
        _write(topo, weights={"v1": 70, "v2": 30})
        with gateway(topo["routes"], transport=request.param) as (gw, grpc_port):
            topo.update(url=gw.url, target=f"127.0.0.1:{grpc_port}", gw=gw)
            yield topo


@contextlib.contextmanager
def gateway(routes: Path, *, transport: str) -> Iterator[tuple[Any, int]]:
    """``ferryman gateway`` on ``routes``, its gRPC door on ``transport``: (the process, its gRPC port)."""
    port, grpc_port = free_port(), free_port()
    argv = ["gateway", "--routes", str(routes), "--host", "127.0.0.1", "--port", str(port)]
    with ferryman_process(
        [*argv, "--grpc-port", str(grpc_port), "--grpc-transport", transport], port=port
    ) as gw:
        yield gw, grpc_port


def _write(
    topo: Mapping[str, Any],
    *,
    weights: dict[str, int],
    sticky: str | None = None,
    shadow: str | None = None,
    grpc_backends: Mapping[str, str] | None = None,
) -> None:
    table = initial_table(load_deployment(topo["spec"]), weights=weights)
    if sticky is not None:
        table = dataclasses.replace(table, sticky=StickyKey(source=StickySource.header, name=sticky))
    if shadow is not None:
        table = dataclasses.replace(table, shadow=shadow, shadow_percent=100.0)
    doc = table_to_dict(
        table,
        backends=topo["backends"],
        grpc_backends=topo["grpc_backends"] if grpc_backends is None else grpc_backends,
    )
    path: Path = topo["routes"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # kubelet swaps ConfigMap volumes atomically too


def _route(topo: Mapping[str, Any], *, weights: dict[str, int], **kwargs: Any) -> None:
    """Write a routes file and wait until the gateway routes by it (each test's weights are its own)."""
    _write(topo, weights=weights, **kwargs)

    def loaded() -> bool:
        samples = _metrics(topo["url"])
        return all(
            sample_sum(samples, "ferryman_traffic_weight_ratio", version=v) == w / 100
            for v, w in weights.items()
        )

    wait_until(loaded, timeout=30, what=f"the gateway to load {weights}")


def _metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse_exposition(httpx.get(f"{url}/metrics", timeout=10).text)


def _input(row: np.ndarray) -> tc.InferInput:
    item = tc.InferInput("input", [1, 30], "FP32")
    item.set_data_from_numpy(row.reshape(1, 30).astype(np.float32))
    return item


def _infer(client: tc.InferenceServerClient, row: np.ndarray, **kwargs: Any) -> Any:
    return client.infer(MODEL, [_input(row)], **kwargs)


def _version(client: tc.InferenceServerClient, row: np.ndarray, **kwargs: Any) -> str:
    return str(_infer(client, row, **kwargs).get_response().model_version)


def _status(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), str(caught.value.message())


def test_weights_hold_over_grpc_and_answers_match_rest(topology: dict[str, Any], traffic: np.ndarray) -> None:
    _route(topology, weights={"v1": 70, "v2": 30})
    before = _metrics(topology["url"])
    n = 600
    with tc.InferenceServerClient(topology["target"]) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL, as_json=True)
        assert meta["name"] == MODEL and meta["inputs"][0]["name"] == "input"
        assert client.get_server_metadata(as_json=True)["name"]
        seen = Counter(_version(client, traffic[i % len(traffic)]) for i in range(n))
        answer = _infer(client, traffic[3], model_version="v2")
    assert set(seen) == {"v1", "v2"}
    assert abs(100.0 * seen["v2"] / n - 30) <= 6.5, seen  # 3.5 standard deviations
    rest = httpx.post(
        f"{topology['url']}/v2/models/{MODEL}/versions/v2/infer",
        timeout=10,
        json={
            "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": traffic[3].tolist()}]
        },
    ).json()
    for out in rest["outputs"]:
        np.testing.assert_allclose(
            answer.as_numpy(out["name"]).ravel(), np.asarray(out["data"]).ravel(), rtol=1e-6
        )
    after = _metrics(topology["url"])

    def delta(**labels: str) -> float:
        return sample_sum(after, "ferryman_requests_total", **labels) - sample_sum(
            before, "ferryman_requests_total", **labels
        )

    moved = {
        dict(labels)["route"] + "/" + dict(labels)["version"] + "/" + dict(labels)["code"]: value
        - before.get((name, labels), 0.0)
        for (name, labels), value in after.items()
        if name == "ferryman_requests_total" and dict(labels).get("protocol") == "grpc-raw"
    }
    assert delta(protocol="grpc-raw", route="stable", version="v1", code="200") == seen["v1"], moved
    assert delta(protocol="grpc-raw", route="candidate", version="v2", code="200") == seen["v2"]
    assert delta(protocol="grpc-raw", route="pinned", version="v2", code="200") == 1, moved


def test_pins_errors_and_typed_contents(topology: dict[str, Any], traffic: np.ndarray) -> None:
    _route(topology, weights={"v1": 60, "v2": 40})
    with tc.InferenceServerClient(topology["target"]) as client:
        assert [_version(client, traffic[i], model_version="v2") for i in range(20)] == ["v2"] * 20
        pinned = [_version(client, traffic[i], headers={"x-ferryman-version": "v1"}) for i in range(20)]
        assert pinned == ["v1"] * 20
        code, message = _status(lambda: _infer(client, traffic[0], headers={"x-ferryman-version": "v9"}))
        assert code == "StatusCode.NOT_FOUND" and "v9" in message
        code, message = _status(lambda: client.infer("other", [_input(traffic[0])]))
        assert code == "StatusCode.NOT_FOUND" and "other" in message
        # the version server's own INVALID_ARGUMENT, passed through with its message
        wrong = tc.InferInput("inputs", [1, 30], "FP32")
        wrong.set_data_from_numpy(traffic[:1].astype(np.float32))
        code, message = _status(lambda: client.infer(MODEL, [wrong]))
        assert code == "StatusCode.INVALID_ARGUMENT" and "inputs" in message
    # typed contents in, typed contents out (tritonclient always sends raw: a channel of our own)
    request = pb.ModelInferRequest(model_name=MODEL, model_version="v1")
    item = request.inputs.add(name="input", datatype="FP32", shape=[1, 30])
    item.contents.fp32_contents.extend(traffic[0].astype(np.float32).tolist())
    with grpc.insecure_channel(topology["target"]) as channel:
        call = channel.unary_unary(
            INFER,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        response = call(request, timeout=10)
        assert response.model_version == "v1" and not response.raw_output_contents
        assert all(
            len(o.contents.fp32_contents) + len(o.contents.int64_contents) > 0 for o in response.outputs
        )
        short = pb.ModelInferRequest(
            model_name=MODEL, raw_input_contents=[traffic[:2].astype(np.float32).tobytes()[:-4]]
        )
        short.inputs.add(name="input", datatype="FP32", shape=[2, 30])
        with pytest.raises(grpc.RpcError) as caught:
            call(short, timeout=10)
        assert (
            caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "needs 240 bytes" in caught.value.details()
        )
        malformed = channel.unary_unary(
            INFER, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as caught:
            malformed(b"\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_version_without_a_grpc_address_is_unavailable_not_internal(
    topology: dict[str, Any], traffic: np.ndarray
) -> None:
    _route(topology, weights={"v1": 90, "v2": 10}, grpc_backends={"v1": topology["grpc_backends"]["v1"]})
    try:
        with tc.InferenceServerClient(topology["target"]) as client:
            assert _version(client, traffic[0], model_version="v1") == "v1"
            code, message = _status(lambda: _infer(client, traffic[0], model_version="v2"))
        assert code == "StatusCode.UNAVAILABLE" and "grpcBackends" in message
    finally:
        _write(topology, weights={"v1": 70, "v2": 30})


def test_a_sticky_key_in_metadata_gets_the_arm_rest_gives_it(
    topology: dict[str, Any], traffic: np.ndarray
) -> None:
    _route(topology, weights={"v1": 50, "v2": 50}, sticky="x-user-id")
    keys = [f"user-{i}" for i in range(120)]
    rest = arms_for(topology["url"], keys, traffic, lambda key: {"headers": {"x-user-id": key}})
    with tc.InferenceServerClient(topology["target"]) as client:
        over_grpc = {
            k: _version(client, traffic[(n * 7) % len(traffic)], headers={"x-user-id": k})
            for n, k in enumerate(keys)
        }
        again = {k: _version(client, traffic[0], headers={"x-user-id": k}) for k in keys[:30]}
    assert over_grpc == rest
    assert again == {k: rest[k] for k in keys[:30]}
    assert 0.25 <= Counter(rest.values())["v1"] / len(keys) <= 0.75


def test_shadow_copies_go_to_the_candidate_over_grpc(topology: dict[str, Any], traffic: np.ndarray) -> None:
    _route(topology, weights={"v1": 100, "v2": 0}, shadow="v2")
    gateway, candidate = topology["url"], topology["servers"]["v2"].url
    before, before_v2 = _metrics(gateway), _metrics(candidate)
    n = 30
    with tc.InferenceServerClient(topology["target"]) as client:
        answered = Counter(_version(client, traffic[i]) for i in range(n))
    assert answered == {"v1": n}  # callers always get stable's answer

    def copies() -> float:
        now = _metrics(gateway)
        return sample_sum(
            now, "ferryman_requests_total", protocol="shadow", version="v2", code="200"
        ) - sample_sum(before, "ferryman_requests_total", protocol="shadow", version="v2", code="200")

    wait_until(lambda: copies() == n, timeout=30, what=f"{n} shadow copies")
    after_v2 = _metrics(candidate)
    # the candidate answered them over gRPC (the gateway forwards the caller's message as is)
    assert (
        sample_sum(after_v2, "ferryman_requests_total", protocol="grpc-raw", code="200")
        - sample_sum(before_v2, "ferryman_requests_total", protocol="grpc-raw", code="200")
    ) == n


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_the_callers_api_key_reaches_the_version_server(
    sample_spec: Path, tmp_path: Path, traffic: np.ndarray, transport: str
) -> None:
    """A version server with API keys behind the gateway: the key travels in metadata (Bearer or x-api-key),
    its absence is the version server's UNAUTHENTICATED, passed through; the gateway's health stays open."""
    key = "k-" + "7" * 30
    keys = tmp_path / "keys"
    keys.write_text(key + "\n")
    spec = _single_version_spec(sample_spec, "v1", tmp_path)
    grpc_port = free_port()
    with serve_cli(spec, args=["--grpc-port", str(grpc_port), "--api-keys", str(keys)]) as v1:
        topo: dict[str, Any] = {
            "spec": sample_spec,
            "routes": tmp_path / "routes.json",
            "backends": {"v1": v1.url},
            "grpc_backends": {"v1": f"127.0.0.1:{grpc_port}"},
        }
        _write(topo, weights={"v1": 100})
        with (
            gateway(topo["routes"], transport=transport) as (_, gateway_grpc),
            tc.InferenceServerClient(f"127.0.0.1:{gateway_grpc}") as client,
        ):
            assert client.is_server_ready()
            code, message = _status(lambda: _infer(client, traffic[0]))
            assert code == "StatusCode.UNAUTHENTICATED" and "API key" in message
            assert _version(client, traffic[0], headers={"authorization": f"Bearer {key}"}) == "v1"
            assert _version(client, traffic[1], headers={"x-api-key": key}) == "v1"
            code, _ = _status(lambda: _infer(client, traffic[0], headers={"x-api-key": "wrong"}))
            assert code == "StatusCode.UNAUTHENTICATED"


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_a_call_whose_deadline_passes_is_recorded_as_deadline_exceeded(
    sample_spec: Path, tmp_path: Path, traffic: np.ndarray, transport: str
) -> None:
    """The caller's deadline passes while the version server still computes: the gateway answers
    DEADLINE_EXCEEDED and records the call as 408 (not a 502, nor a 200 a model run later); the forward
    carries what is left of the deadline and is cancelled with the call.

    The caller sends ``grpc-timeout`` and waits (a raw HTTP/2 client): a gRPC library would also cancel the
    call on its own timer at the same instant, and its reset then races the gateway's deadline (the
    gateway's deadline starts when the headers arrive, a little after the caller's): a reset that arrives
    first is, as gRPC itself classifies it, a caller that left before its deadline (499)."""
    from tests.helpers.models import slow_model

    slow = slow_model(tmp_path / "breast-cancer.onnx", target_seconds=1.0)
    grpc_port = free_port()
    with serve_cli(slow, args=["--grpc-port", str(grpc_port)]) as v1:
        topo: dict[str, Any] = {
            "spec": sample_spec,
            "routes": tmp_path / "routes.json",
            "backends": {"v1": v1.url},
            "grpc_backends": {"v1": f"127.0.0.1:{grpc_port}"},
        }
        _write(topo, weights={"v1": 100})
        with (
            gateway(topo["routes"], transport=transport) as (gw, gateway_grpc),
            RawH2("127.0.0.1", gateway_grpc, timeout=120) as client,
        ):
            request = pb.ModelInferRequest(model_name=MODEL)
            request.inputs.add(name="input", datatype="FP32", shape=[1, 30])
            request.raw_input_contents.append(traffic[0].reshape(1, 30).astype(np.float32).tobytes())
            client.send(*client.call_frames(1, request.SerializeToString(), grpc_timeout="200m"))
            answer = client.answer(1)
            assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], answer

            def recorded() -> dict[str, float]:
                return {
                    dict(labels)["code"]: value
                    for (name, labels), value in _metrics(gw.url).items()
                    if name == "ferryman_requests_total" and dict(labels).get("protocol") == "grpc-raw"
                }

            assert wait_until(recorded, timeout=20, what="the gateway's record of the call") == {"408": 1.0}
