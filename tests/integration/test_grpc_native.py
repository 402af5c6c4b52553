"""The native gRPC transport at the frame level, over real sockets against ``ferryman serve --grpc-port``:
a raw HTTP/2 client (``tests.helpers.h2raw``) sends what gRPC clients rarely do (CONTINUATION, padding,
resets mid-message, interleaved streams, tiny windows, garbage) and real clients (``tritonclient.grpc`` on
grpc C-core) send large messages and many concurrent calls. The server must answer correctly or refuse with
the protocol's error, and never go down: every test ends with a fresh client getting an answer."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PriorityFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman_runtimes.grpc import inference_pb2 as pb
from tests.helpers.h2raw import INFER, RawH2, grpc_message, infer_request
from tests.helpers.ports import free_port
from tests.helpers.servers import CliServer, serve_cli
from tests.integration.test_grpc_serve import _slow_spec

MODEL = "breast-cancer"
MAX_BODY = 8 << 20
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def served(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CliServer, int]]:
    port = free_port()
    cache = tmp_path_factory.mktemp("grpc-native-cache")
    args = ["--grpc-port", str(port), "--max-body-bytes", str(MAX_BODY), "--grpc-transport", "native"]
    with serve_cli(sample_spec, args=args, env={"FERRYMAN_MODEL_CACHE": str(cache)}) as server:
        yield server, port


def _request(rows: np.ndarray) -> bytes:
    return infer_request(rows, model=MODEL)


def _expected(port: int, rows: np.ndarray) -> pb.ModelInferResponse:
    """The same request through grpc C-core (tritonclient's channel), as the reference answer."""
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        raw = channel.unary_unary(INFER)(_request(rows), timeout=60)
    return pb.ModelInferResponse.FromString(raw)


def _alive(port: int) -> None:
    with tc.InferenceServerClient(f"{HOST}:{port}") as client:
        assert client.is_server_live() and client.is_model_ready(MODEL)


def _goaway_code(data: bytes) -> int | None:
    """The error code of the GOAWAY among raw frames (None: there is none)."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        if data[pos + 3] == 0x7:
            return int.from_bytes(data[pos + 13 : pos + 17], "big")
        pos += 9 + length
    return None


# -- framing -------------------------------------------------------------------------------------------
def test_continuation_padding_and_priority_are_understood(
    served: tuple[CliServer, int], traffic: np.ndarray
) -> None:
    port = served[1]
    rows = traffic[:3]
    with RawH2(HOST, port) as client:
        block = client.headers_block(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", INFER),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("x-padding-metadata", "m" * 300),
            ]
        )
        third = len(block) // 3
        head = HeadersFrame(1, block[:third], pad_length=7, depends_on=0, stream_weight=16)
        head.flags.add("PADDED")
        head.flags.add("PRIORITY")
        middle = ContinuationFrame(1, block[third : 2 * third])
        last = ContinuationFrame(1, block[2 * third :])
        last.flags.add("END_HEADERS")
        message = grpc_message(_request(rows))
        first = DataFrame(1, message[:10], pad_length=20)
        first.flags.add("PADDED")
        rest = DataFrame(1, message[10:], pad_length=3)
        rest.flags.add("PADDED")
        rest.flags.add("END_STREAM")
        client.send(PriorityFrame(1, depends_on=0, stream_weight=200), head, middle, last, first, rest)
        answer = client.answer(1)
    assert answer.status == 0, answer
    assert pb.ModelInferResponse.FromString(answer.message) == _expected(port, rows)


def test_ping_is_acked_and_unknown_methods_are_unimplemented(served: tuple[CliServer, int]) -> None:
    port = served[1]
    with RawH2(HOST, port) as client:
        client.ping(b"ferryman")
        client.send(*client.call_frames(1, b"", path="/inference.GRPCInferenceService/NoSuchRpc"))
        client.send(*client.call_frames(3, b"", path="/other.Service/ServerLive"))
        client.until(lambda: client.ping_acks == [b"ferryman"])
        assert client.answer(1).status == grpc.StatusCode.UNIMPLEMENTED.value[0]
        assert client.answer(3).status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    with grpc.insecure_channel(f"{HOST}:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_non_ascii_message_travels_percent_encoded(served: tuple[CliServer, int]) -> None:
    with grpc.insecure_channel(f"{HOST}:{served[1]}") as channel, pytest.raises(grpc.RpcError) as caught:
        request = pb.ModelMetadataRequest(name="modèle-ünknown %")
        channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")(request.SerializeToString())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "modèle-ünknown %" in caught.value.details()


# -- flow control and large messages -------------------------------------------------------------------
def test_large_messages_both_ways_with_tritonclient(
    served: tuple[CliServer, int], traffic: np.ndarray
) -> None:
    """A ~5 MB request (many DATA frames, the server's WINDOW_UPDATEs) and a ~200 kB answer (beyond the
    client's initial 64 KiB window) through grpc C-core."""
    rows = np.resize(traffic, (40_000, 30)).astype(np.float32)
    item = tc.InferInput("input", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows)
    with tc.InferenceServerClient(f"{HOST}:{served[1]}") as client:
        result = client.infer(MODEL, [item])
    reference = _expected(served[1], rows[:2000])
    got = result.get_response()
    assert [o.name for o in got.outputs] == [o.name for o in reference.outputs]
    assert got.outputs[0].shape[0] == 40_000
    for i, _ in enumerate(reference.outputs):  # the first 2000 rows answer as they do alone
        size = len(reference.raw_output_contents[i])
        assert got.raw_output_contents[i][:size] == reference.raw_output_contents[i]


def test_the_answer_waits_for_the_clients_window(served: tuple[CliServer, int], traffic: np.ndarray) -> None:
    """A client advertising a 4096-byte stream window: every DATA frame stays within what it allowed, the
    server waits for its WINDOW_UPDATEs, and the answer (over 64 KiB) arrives whole."""
    port = served[1]
    rows = np.resize(traffic, (5000, 30))
    with RawH2(HOST, port, window=4096) as client:
        client.send(*client.call_frames(1, _request(rows)))
        credit = 4096
        while not (1 in client.answers and client.answers[1].ended):
            frame = client.read_one()
            assert frame is not None
            if isinstance(frame, DataFrame):
                assert len(frame.data) <= credit  # never beyond what the client allowed
                credit -= len(frame.data)
                if credit == 0:
                    client.window_update(1, 4096)
                    client.window_update(0, 4096)
                    credit = 4096
        answer = client.answers[1]
    assert len(answer.data) > 64 * 1024
    assert answer.status == 0
    assert pb.ModelInferResponse.FromString(answer.message) == _expected(port, rows)


# -- streams -------------------------------------------------------------------------------------------
def test_interleaved_streams_on_one_connection(served: tuple[CliServer, int], traffic: np.ndarray) -> None:
    port = served[1]
    ids = list(range(1, 100, 2))
    with RawH2(HOST, port) as client:
        calls = {sid: client.call_frames(sid, _request(traffic[i : i + 1])) for i, sid in enumerate(ids)}
        client.send(*[calls[sid][0] for sid in ids])  # every HEADERS first
        client.send(*[calls[sid][1] for sid in reversed(ids)])  # then the messages, last stream first
        answers = {sid: client.answer(sid) for sid in ids}
    expected = _expected(port, traffic[: len(ids)])
    label = expected.raw_output_contents[0]
    width = len(label) // len(ids)
    for i, sid in enumerate(ids):
        assert answers[sid].status == 0
        got = pb.ModelInferResponse.FromString(answers[sid].message)
        assert got.raw_output_contents[0] == label[i * width : (i + 1) * width]


def test_many_concurrent_calls_from_one_tritonclient(
    served: tuple[CliServer, int], traffic: np.ndarray
) -> None:
    rows = np.ascontiguousarray(traffic[:64], dtype=np.float32)
    with tc.InferenceServerClient(f"{HOST}:{served[1]}") as client:

        def call(i: int) -> np.ndarray:
            item = tc.InferInput("input", [1, 30], "FP32")
            item.set_data_from_numpy(rows[i : i + 1])
            return client.infer(MODEL, [item]).as_numpy("label")  # type: ignore[no-any-return]

        with ThreadPoolExecutor(16) as pool:
            labels = list(pool.map(call, range(64)))
        item = tc.InferInput("input", [64, 30], "FP32")
        item.set_data_from_numpy(rows)
        together = client.infer(MODEL, [item]).as_numpy("label")
    np.testing.assert_array_equal(np.concatenate(labels), together)


def test_a_call_cancelled_mid_message_leaves_the_connection_working(
    served: tuple[CliServer, int], traffic: np.ndarray
) -> None:
    port = served[1]
    with RawH2(HOST, port) as client:
        headers, data = client.call_frames(1, _request(traffic[:100]))
        half = DataFrame(1, data.data[: len(data.data) // 2])
        client.send(headers, half)
        client.reset(1)
        client.send(*client.call_frames(3, _request(traffic[:1])))
        answer = client.answer(3)
        assert answer.status == 0
        assert 1 not in client.answers or client.answers[1].status is None  # the cancelled call: no answer
    _alive(port)


def test_oversize_and_malformed_messages_are_refused_per_stream(
    served: tuple[CliServer, int], traffic: np.ndarray
) -> None:
    port = served[1]
    with RawH2(HOST, port) as client:
        client.send(*client.call_frames(1, b"\xff\xff\xff"))
        big = b"\x00" + (MAX_BODY + 1).to_bytes(4, "big") + b"\x00" * 1000  # declares more than the limit
        headers, _ = client.call_frames(3, b"")
        client.send(headers, DataFrame(3, big))
        bad = client.answer(1)
        over = client.answer(3)
        client.send(*client.call_frames(5, _request(traffic[:1])))
        ok = client.answer(5)
        headers, _ = client.call_frames(7, _request(traffic[:1]))
        client.send(headers, DataFrame(7, grpc_message(b"") + grpc_message(b"")))  # two messages, no end
        twice = client.answer(7)
    assert bad.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert over.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert str(MAX_BODY) in dict(over.headers)["grpc-message"]
    assert ok.status == 0
    assert twice.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_grpc_timeout_that_passes_is_deadline_exceeded(tmp_path: Path) -> None:
    port = free_port()
    with serve_cli(_slow_spec(tmp_path, queue=4), args=["--grpc-port", str(port)]):
        rows = np.zeros((1, 30), np.float32)
        item = tc.InferInput("input", [1, 30], "FP32")
        item.set_data_from_numpy(rows)
        message = pb.ModelInferRequest(model_name="slow")
        message.inputs.add(name="input", datatype="FP32", shape=[1, 30])
        message.raw_input_contents.append(rows.tobytes())
        with RawH2(HOST, port) as client:
            client.send(*client.call_frames(1, message.SerializeToString(), grpc_timeout="1m"))
            assert client.answer(1).status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            client.send(*client.call_frames(3, message.SerializeToString(), grpc_timeout="30S"))
            assert client.answer(3).status == 0


# -- connection errors and shutdown ---------------------------------------------------------------------
def test_protocol_errors_get_goaway_and_the_server_stays_up(served: tuple[CliServer, int]) -> None:
    port = served[1]
    with socket.create_connection((HOST, port), timeout=10) as sock:  # not HTTP/2 at all
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert _goaway_code(got) == 0x1  # PROTOCOL_ERROR
    with RawH2(HOST, port) as client:  # DATA on an idle stream
        client.send(DataFrame(7, b"xx"))
        client.drain_until_closed()
        assert client.goaway is not None and client.goaway[1] == 0x1  # PROTOCOL_ERROR
    with RawH2(HOST, port) as client:  # a header block that is not HPACK
        frame = HeadersFrame(1, b"\xff\xff\xff\xff\xff\xff")
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        client.send(frame)
        client.drain_until_closed()
        assert client.goaway is not None and client.goaway[1] == 0x9  # COMPRESSION_ERROR
    _alive(port)


_FRAME = st.tuples(
    st.integers(0, 12),  # type, a few unknown ones included
    st.integers(0, 255),  # flags
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),  # stream
    st.binary(max_size=40),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_FRAME, min_size=1, max_size=6))
def test_fuzzed_frames_never_take_the_server_down(
    served: tuple[CliServer, int], frames: list[tuple[int, int, int, bytes]]
) -> None:
    port = served[1]
    raw = b"".join(
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
        for kind, flags, stream, payload in frames
    )
    with RawH2(HOST, port, timeout=10) as client:
        client.send(raw)
        client.ping(b"fuzzdone")  # answered once every frame before it was handled, unless it closed
        try:
            while b"fuzzdone" not in client.ping_acks:
                if client.read_one() is None:
                    break
        except Exception:  # a frame the test client itself cannot parse: the server sent what it sent
            pass
    with RawH2(HOST, port) as client:
        client.send(*client.call_frames(1, b"", path="/inference.GRPCInferenceService/ServerLive"))
        assert client.answer(1).status == 0


def test_shutdown_sends_goaway_and_finishes_calls_in_flight(tmp_path: Path) -> None:
    port = free_port()
    spec = _slow_spec(tmp_path, queue=4, seconds=1.0)
    with serve_cli(spec, args=["--grpc-port", str(port)]) as server:
        message = pb.ModelInferRequest(model_name="slow")
        message.inputs.add(name="input", datatype="FP32", shape=[1, 30])
        message.raw_input_contents.append(np.zeros((1, 30), np.float32).tobytes())
        with RawH2(HOST, port) as client:
            client.send(*client.call_frames(1, message.SerializeToString()))
            client.ping(b"received")
            client.until(lambda: b"received" in client.ping_acks)  # the call is in the server's hands
            server.process.send_signal(signal.SIGTERM)
            client.until(lambda: client.goaway is not None)
            assert client.goaway == (1, 0)  # NO_ERROR; stream 1 is the last one it will answer
            client.send(*client.call_frames(3, message.SerializeToString()))
            answer = client.answer(1)
            assert answer.status == 0  # drained: answered after the GOAWAY
            assert pb.ModelInferResponse.FromString(answer.message).model_name == "slow"
        server.process.wait(timeout=30)
