"""Direct dispatch over real sockets: predictions answered by the HTTP protocol itself (no ASGI task).

The server here is uvicorn with ferryman's protocol (``ferryman_runtimes.asgi.direct``) in a thread, so the
test can read the app's in-flight count and every request record. Each test speaks raw HTTP/1.1 where the
behaviour lives in the bytes: pipelining, chunked bodies, ``Expect: 100-continue``, HTTP/1.0, a client that
leaves mid-body. A percent-encoded path takes uvicorn's ASGI path: both paths must answer alike.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ferryman.dataplane import DataPlane, ModelRepository
from ferryman.engine import OnnxModel
from ferryman.spec import Limits
from ferryman.telemetry import RequestObserver, RequestRecord
from ferryman_runtimes.asgi.app import InferenceApp
from ferryman_runtimes.asgi.direct import PROTOCOL
from tests.helpers.servers import ThreadedServer, serve_app

INFER = "/v2/models/add/infer"
ENCODED = "/v2/models/%61dd/infer"  # the same route, percent-encoded: uvicorn's ASGI path
MAX_BODY = 4096


class Records(RequestObserver):
    """A request observer that keeps every record (the app calls it on the event-loop thread)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.started_count = 0

    def started(self, model: str) -> None:
        self.started_count += 1

    def finished(self, record: RequestRecord, request: object, response: object) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path]) -> InferenceApp:
    repo = ModelRepository()
    repo.add(OnnxModel.load(tiny_models["add_one"], name="add", version="1"))
    repo.ready = True
    limits = Limits(max_body_bytes=MAX_BODY, request_timeout_seconds=1.0, max_in_flight=1)
    return InferenceApp(DataPlane(repo, limits=limits), observer=Records())


@pytest.fixture(scope="module")
def server(app: InferenceApp) -> Iterator[ThreadedServer]:
    with serve_app(app, http=PROTOCOL) as s:
        yield s


@pytest.fixture
def records(app: InferenceApp) -> list[RequestRecord]:
    observer = app.observer
    assert isinstance(observer, Records)
    observer.records.clear()
    return observer.records


def body_for(*values: float) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": list(values)}]}
    )


def post(path: str, body: bytes, *, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def read_responses(
    sock: socket.socket, count: int, *, timeout: float = 10.0
) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses off a socket (content-length framed), in order."""
    sock.settimeout(timeout)
    buffer = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} response(s): {buffer!r}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buffer += chunk
        out.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return out


def closed(sock: socket.socket, *, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def y_of(payload: bytes) -> list[float]:
    return orjson.loads(payload)["outputs"][0]["data"]


def test_direct_and_asgi_paths_answer_alike(server: ThreadedServer, records: list[RequestRecord]) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, body_for(1, 2, 3)) + post(ENCODED, body_for(1, 2, 3)))
        (s1, h1, b1), (s2, h2, b2) = read_responses(s, 2)
        [connection] = [
            c
            for c in server.server.server_state.connections
            if c.client and c.client[1] == s.getsockname()[1]
        ]
        assert connection.direct_answers == 1  # the first one; the percent-encoded one took the ASGI path
    assert (s1, s2) == (200, 200)
    assert b1 == b2 and y_of(b1) == [2, 3, 4]
    for h in (h1, h2):
        assert h["content-type"] == "application/json"
        assert "date" in h and "server" in h
    assert [(r.code, r.version, r.route, r.protocol) for r in records] == [(200, "1", "direct", "v2")] * 2
    # errors too: the same status and message on both paths
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, b'{"inputs": [}') + post(ENCODED, b'{"inputs": [}'))
        (s1, _, b1), (s2, _, b2) = read_responses(s, 2)
    assert s1 == s2 == 400 and b1 == b2 and b"error" in b1


def test_pipelined_requests_are_answered_in_order(server: ThreadedServer) -> None:
    """Direct and ASGI requests interleaved in one write: every answer comes back, in request order."""
    batch = [post(INFER, body_for(i, 0, 0)) for i in range(3)]
    batch.insert(1, b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
    batch.insert(3, post(ENCODED, body_for(10, 0, 0)))
    batch.append(post("/v2/models/nope/infer", body_for(0, 0, 0)))
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"".join(batch))
        answers = read_responses(s, 6)
    assert [a[0] for a in answers] == [200, 200, 200, 200, 200, 404]
    assert orjson.loads(answers[1][2]) == {"ready": True}
    assert [y_of(a[2])[0] for i, a in enumerate(answers[:5]) if i != 1] == [1, 2, 11, 3]


def test_chunked_and_split_bodies(server: ThreadedServer) -> None:
    body = body_for(4, 5, 6)
    head = f"POST {INFER} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunked = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:7], body[7:20], body[20:])
    )
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + chunked + b"0\r\n\r\n")
        [(status, _, payload)] = read_responses(s, 1)
        assert status == 200 and y_of(payload) == [5, 6, 7]
        whole = post(INFER, body)  # the same connection, the request in three writes with pauses
        for piece in (whole[:10], whole[10:60], whole[60:]):
            s.sendall(piece)
            time.sleep(0.05)
        [(status, _, payload)] = read_responses(s, 1)
        assert status == 200 and y_of(payload) == [5, 6, 7]


def test_expect_continue_and_http10(server: ThreadedServer) -> None:
    body = body_for(0, 0, 1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            post(INFER, b"", extra="Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
            )
        )
        s.settimeout(10)
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        [(status, _, payload)] = read_responses(s, 1)
        assert status == 200 and y_of(payload) == [1, 1, 2]
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, body, version="1.0"))
        [(status, headers, payload)] = read_responses(s, 1)
        assert status == 200 and headers["connection"] == "close" and y_of(payload) == [1, 1, 2]
        assert closed(s)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, body, extra="Connection: close\r\n"))
        [(status, headers, _)] = read_responses(s, 1)
        assert status == 200 and headers["connection"] == "close"
        assert closed(s)


def test_a_body_over_the_limit_is_413_and_recorded(
    server: ThreadedServer, app: InferenceApp, records: list[RequestRecord]
) -> None:
    big = body_for(*([1.0] * 3)).replace(b"[1.0,1.0,1.0]", b"[" + b"1.0," * 2000 + b"1.0]")
    assert len(big) > MAX_BODY
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, big))  # declared too large: refused before the body is read
        [(status, headers, payload)] = read_responses(s, 1)
        assert status == 413 and headers["connection"] == "close"
        assert b"exceeds the limit of 4096 bytes" in payload
        assert closed(s)
    head = f"POST {INFER} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            head + f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
        )  # undeclared: cut off on arrival
        [(status, _, payload)] = read_responses(s, 1)
        assert status == 413 and b"exceeds the limit" in payload
    assert [r.code for r in records] == [413, 413]
    assert app.in_flight == 0


def test_a_client_that_leaves_mid_body_gives_its_slot_back(
    server: ThreadedServer, app: InferenceApp, records: list[RequestRecord]
) -> None:
    """maxInFlight is 1: the slot a half-sent request holds must come back when its client goes away."""
    body = body_for(7, 8, 9)
    with socket.create_connection(("127.0.0.1", server.port)) as holder:
        holder.sendall(post(INFER, body)[:-10])
        deadline = time.monotonic() + 10
        while app.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.in_flight == 1
        with socket.create_connection(("127.0.0.1", server.port)) as other:
            other.sendall(post(INFER, body))
            [(status, headers, payload)] = read_responses(other, 1)
            assert status == 503 and int(headers["retry-after"]) >= 1 and b"in flight" in payload
            # the refused request's body was read past: the connection still serves
    deadline = time.monotonic() + 10
    while app.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.in_flight == 0
    assert [r.code for r in records] == [400]  # the abandoned request is recorded (a refusal is not admitted)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, body))
        [(status, _, payload)] = read_responses(s, 1)
        assert status == 200 and y_of(payload) == [8, 9, 10]


def test_a_trickled_body_times_out_with_408(
    server: ThreadedServer, app: InferenceApp, records: list[RequestRecord]
) -> None:
    body = body_for(1, 1, 1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(INFER, body)[:-5])
        [(status, headers, payload)] = read_responses(s, 1, timeout=10)
        assert status == 408 and headers["connection"] == "close" and b"not received within" in payload
        assert closed(s)
    assert [r.code for r in records] == [408]
    assert app.in_flight == 0


def test_refused_then_served_on_one_connection(server: ThreadedServer) -> None:
    """A refusal at admission (unknown model) keeps the connection: the body is read past, not executed."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post("/v2/models/nope/infer", body_for(1, 2, 3)) + post(INFER, body_for(1, 2, 3)))
        (s1, _, b1), (s2, _, b2) = read_responses(s, 2)
    assert s1 == 404 and b"not found" in b1
    assert s2 == 200 and y_of(b2) == [2, 3, 4]


def test_keep_alive_closes_an_idle_connection_only(app: InferenceApp) -> None:
    """One timer per keep-alive period: a connection in use stays open past it, an idle one is closed."""
    with (
        serve_app(app, http=PROTOCOL, timeout_keep_alive=1) as server,
        socket.create_connection(("127.0.0.1", server.port)) as busy,
    ):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # more than two periods, a request every 0.3 s
            busy.sendall(post(INFER, body_for(1, 1, 1)))
            [(status, _, _)] = read_responses(busy, 1)
            t_idle = time.monotonic()  # idle from the last answer on
            assert status == 200
            time.sleep(0.3)
        assert closed(busy, timeout=5)
        assert 0.9 < time.monotonic() - t_idle < 3.0
