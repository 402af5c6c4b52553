"""One call of the native gRPC transport: an HTTP/2 stream's state, and the ``grpc-timeout`` it carries."""

from __future__ import annotations

import asyncio
from typing import Any

# grpc-timeout units (the gRPC over HTTP/2 spec): hours, minutes, seconds, milli-, micro-, nanoseconds
_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}


def parse_timeout(value: bytes, now: float) -> float | None:
    """The deadline (on the loop's clock) a ``grpc-timeout`` value sets; None for a malformed value (the spec:
    at most 8 digits and a unit), which is ignored like gRPC's own servers do."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _UNITS.get(value[-1])
    if unit is None:
        return None
    return now + int(value[:-1]) * unit


class Stream:
    """A unary call: headers, the request body as it arrives, flow-control windows, the answer's progress."""

    __slots__ = (
        "answered",
        "body",
        "closed",
        "deadline",
        "encoding",
        "id",
        "metadata",
        "method",
        "pending_out",
        "received_end",
        "recv_window",
        "send_window",
        "task",
        "timer",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window  # what the client lets us send on it
        self.recv_window = recv_window  # what we let the client send on it
        self.method: str | None = None  # the RPC; None once answered (or never a known call)
        self.metadata: list[tuple[bytes, bytes]] = []
        self.body: bytes | bytearray | None = None
        self.deadline: float | None = None
        self.encoding: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Future[Any] | None = None  # an awaited handler, cancelled if the call is dropped
        self.received_end = False  # the client's END_STREAM
        self.answered = False  # an answer is under way (batched, or waiting for the client's window)
        self.pending_out: memoryview | None = None
        self.closed = False

    def declared_length(self) -> int | None:
        """The length the gRPC message prefix declares, once its 5 bytes have arrived."""
        body = self.body
        if body is None or len(body) < 5:
            return None
        return int.from_bytes(body[1:5], "big")

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()  # the caller left, the deadline passed or the connection went
            self.task = None
        self.body = None
        self.pending_out = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
