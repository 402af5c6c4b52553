"""A raw HTTP/2 client for the native gRPC transport's frame-level tests: frames built by hand
(``hyperframe``, ``hpack``), so a test can send what no gRPC client would (CONTINUATION, padding, resets
mid-message, garbage) and read every frame the server answers with."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import hpack
import numpy as np
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ferryman_runtimes.grpc import inference_pb2 as pb

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
INFER = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(rows: np.ndarray, *, model: str) -> bytes:
    """A serialized v2 ``ModelInferRequest`` of ``rows`` (FP32, input ``input``, raw contents)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    message.raw_input_contents.append(rows.tobytes())
    return message.SerializeToString()  # type: ignore[no-any-return]


def grpc_message(body: bytes) -> bytes:
    """One length-prefixed gRPC message (not compressed)."""
    return b"\x00" + struct.pack(">I", len(body)) + body


def request_headers(path: str = INFER, **extra: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *[(k.replace("_", "-"), v) for k, v in extra.items()],
    ]


@dataclass
class Answer:
    """What one stream got back: headers, DATA bytes, trailers, or a reset."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None
    ended: bool = False

    @property
    def status(self) -> int | None:
        """grpc-status (from the trailers, or a Trailers-Only answer's headers)."""
        for name, value in self.trailers or self.headers:
            if name == "grpc-status":
                return int(value)
        return None

    @property
    def message(self) -> bytes:
        """The answer's one gRPC message (its length prefix checked)."""
        assert self.data[:1] == b"\x00", bytes(self.data[:5])
        (size,) = struct.unpack(">I", self.data[1:5])
        assert len(self.data) == size + 5
        return bytes(self.data[5:])


class RawH2:
    """One client connection; ``window``: the INITIAL_WINDOW_SIZE it advertises (the server's send limit)."""

    def __init__(self, host: str, port: int, *, window: int = 65_535, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.answers: dict[int, Answer] = {}
        self.goaway: tuple[int, int] | None = None  # (last stream id, error code)
        self.ping_acks: list[bytes] = []
        self.window_updates: list[tuple[int, int]] = []
        self.server_settings: dict[int, int] = {}
        self.closed = False
        self.sock.sendall(
            PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: window}).serialize()
        )

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *frames: Frame | bytes) -> None:
        self.sock.sendall(b"".join(fr if isinstance(fr, bytes) else fr.serialize() for fr in frames))

    def headers_block(self, headers: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def call_frames(
        self, stream_id: int, body: bytes, *, path: str = INFER, **extra: str
    ) -> tuple[HeadersFrame, DataFrame]:
        headers = HeadersFrame(stream_id, self.headers_block(request_headers(path, **extra)))
        headers.flags.add("END_HEADERS")
        data = DataFrame(stream_id, grpc_message(body))
        data.flags.add("END_STREAM")
        return headers, data

    def ping(self, opaque: bytes = b"12345678") -> None:
        self.send(PingFrame(0, opaque_data=opaque))

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.send(RstStreamFrame(stream_id, error_code=code))

    def window_update(self, stream_id: int, increment: int) -> None:
        self.send(WindowUpdateFrame(stream_id, window_increment=increment))

    # -- reading ------------------------------------------------------------------------------------
    def _read_frame(self) -> tuple[int | None, set[str], int, Frame] | None:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        head, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
        frame, _ = Frame.parse_frame_header(memoryview(head[:9]))
        frame.parse_body(memoryview(head[9:]))
        return frame.type, set(frame.flags), frame.stream_id, frame

    def read_one(self) -> Frame | None:
        """Read and account one frame (None: the server closed the connection)."""
        got = self._read_frame()
        if got is None:
            return None
        _, flags, stream_id, frame = got
        name = type(frame).__name__
        if name == "SettingsFrame" and "ACK" not in flags:
            self.server_settings.update(frame.settings)  # type: ignore[attr-defined]
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif name == "PingFrame" and "ACK" in flags:
            self.ping_acks.append(frame.opaque_data)  # type: ignore[attr-defined]
        elif name == "GoAwayFrame":
            self.goaway = (frame.last_stream_id, frame.error_code)  # type: ignore[attr-defined]
        elif name == "WindowUpdateFrame":
            self.window_updates.append((stream_id, frame.window_increment))  # type: ignore[attr-defined]
        elif name == "HeadersFrame":
            answer = self.answers.setdefault(stream_id, Answer())
            raw = self.decoder.decode(frame.data, raw=True)  # type: ignore[attr-defined]
            block = [(str(k, "latin-1"), str(v, "latin-1")) for k, v in raw]
            if answer.headers:
                answer.trailers = block
            else:
                answer.headers = block
            answer.ended = answer.ended or "END_STREAM" in flags
        elif name == "DataFrame":
            answer = self.answers.setdefault(stream_id, Answer())
            answer.data += frame.data  # type: ignore[attr-defined]
            answer.ended = answer.ended or "END_STREAM" in flags
        elif name == "RstStreamFrame":
            self.answers.setdefault(stream_id, Answer()).reset = frame.error_code  # type: ignore[attr-defined]
        return frame

    def until(self, done: object) -> None:
        """Read frames until ``done()`` is true; fails if the server closes the connection first."""
        while not done():  # type: ignore[operator]
            if self.read_one() is None:
                raise ConnectionError("the server closed the connection")

    def answer(self, stream_id: int) -> Answer:
        """Read until ``stream_id`` has ended (or was reset)."""
        self.until(
            lambda: (
                stream_id in self.answers
                and (self.answers[stream_id].ended or self.answers[stream_id].reset is not None)
            )
        )
        return self.answers[stream_id]

    def drain_until_closed(self) -> None:
        while self.read_one() is not None:
            pass


__all__ = ["INFER", "Answer", "ContinuationFrame", "DataFrame", "HeadersFrame", "RawH2", "grpc_message"]
