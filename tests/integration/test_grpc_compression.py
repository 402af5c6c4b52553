"""Compressed requests on the native gRPC transport, over real sockets against ``ferryman serve``: standard
clients (tritonclient on grpc C-core, a plain grpc channel) with gzip and deflate get the same answers as
without; a raw HTTP/2 client sends what they would not (unknown algorithms, bombs, garbage) and gets the
status gRPC's compression spec names, with the server still answering afterwards."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc

from ferryman_runtimes.grpc import inference_pb2 as pb
from tests.helpers.h2raw import INFER, RawH2, infer_request
from tests.helpers.ports import free_port
from tests.helpers.servers import serve_cli

MODEL = "breast-cancer"
MAX_BODY = 1 << 20
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def port(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    grpc_port = free_port()
    cache = tmp_path_factory.mktemp("grpc-compression-cache")
    args = ["--grpc-port", str(grpc_port), "--max-body-bytes", str(MAX_BODY), "--grpc-transport", "native"]
    with serve_cli(sample_spec, args=args, env={"FERRYMAN_MODEL_CACHE": str(cache)}):
        yield grpc_port


def _request(rows: np.ndarray) -> bytes:
    return infer_request(rows, model=MODEL)


def _triton_infer(port: int, rows: np.ndarray, compression: str | None) -> np.ndarray:
    item = tc.InferInput("input", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows.astype(np.float32))
    with tc.InferenceServerClient(f"{HOST}:{port}") as client:
        result = client.infer(MODEL, [item], compression_algorithm=compression)
    out = result.as_numpy(result.get_response().outputs[0].name)
    assert out is not None
    return out


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_get_the_same_answers(
    port: int, traffic: np.ndarray, algorithm: str
) -> None:
    rows = np.resize(traffic, (2000, traffic.shape[1]))  # large enough that grpc C-core compresses it
    plain = _triton_infer(port, rows, None)
    assert np.array_equal(_triton_infer(port, rows, algorithm), plain)


def test_a_grpc_channel_with_gzip_gets_the_same_answer(port: int, traffic: np.ndarray) -> None:
    rows = traffic[:50]
    answers = []
    for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip):
        with grpc.insecure_channel(f"{HOST}:{port}", compression=compression) as channel:
            raw = channel.unary_unary(INFER)(_request(rows), timeout=60)
        answers.append(pb.ModelInferResponse.FromString(raw))
    assert answers[0] == answers[1] and answers[0].outputs


def _raw_call(
    port: int, message: bytes, *, flag: int = 1, **headers: str
) -> tuple[int | None, dict[str, str]]:
    """One call whose message prefix carries ``flag``; its grpc-status and response headers."""
    with RawH2(HOST, port) as client:
        frames = client.call_frames(1, b"", **headers)
        frames[1].data = bytes([flag]) + struct.pack(">I", len(message)) + message
        client.send(*frames)
        answer = client.answer(1)
    return answer.status, dict(answer.headers)


def test_raw_compressed_requests_get_the_statuses_of_the_spec(port: int, traffic: np.ndarray) -> None:
    good = _request(traffic[:3])
    status, headers = _raw_call(port, gzip.compress(good), grpc_encoding="gzip")
    assert status == 0 and headers["grpc-accept-encoding"] == "identity,deflate,gzip"
    assert _raw_call(port, zlib.compress(good), grpc_encoding="deflate")[0] == 0

    status, headers = _raw_call(port, good, grpc_encoding="snappy")
    assert status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert headers["grpc-accept-encoding"] == "identity,deflate,gzip"  # what to send instead
    assert _raw_call(port, gzip.compress(good))[0] == grpc.StatusCode.INTERNAL.value[0]  # no algorithm named
    assert _raw_call(port, b"garbage", grpc_encoding="gzip")[0] == grpc.StatusCode.INTERNAL.value[0]
    assert _raw_call(port, good, flag=2)[0] == grpc.StatusCode.INTERNAL.value[0]

    bomb = zlib.compress(b"\x00" * (32 * MAX_BODY), 9)  # under the limit compressed, 32x over inflated
    assert len(bomb) < MAX_BODY
    assert _raw_call(port, bomb, grpc_encoding="deflate")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

    assert _triton_infer(port, traffic[:2].astype(np.float32), "gzip").shape[0] == 2  # still serving
