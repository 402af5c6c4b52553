"""One write per small response: uvicorn writes the status line and headers, then the body, as two socket
writes (two syscalls, two TCP segments, two wake-ups of the client). For a 200-byte inference answer that
second write is a third of the server's CPU time. This protocol holds a header block back until the body
follows and hands both to the transport together (``writelines``: one ``writev``).

It is :class:`~ferryman_runtimes.asgi.limits.LimitedHttpToolsProtocol` (header size and receive-time
limits) with the transport wrapped. A header block with no body write after it (``HEAD``, an empty body)
is flushed on the next loop iteration, and before the transport closes; writes of anything else go straight
through. Every ferryman HTTP server uses it (``ferryman_runtimes.native.server.uvicorn_options``): the native
runtime, the gateway, the cluster gateway and the KServe-contract server. Use it as
``uvicorn.Config(http=PROTOCOL)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ferryman_runtimes.asgi.limits import LimitedHttpToolsProtocol

PROTOCOL = "ferryman_runtimes.asgi.coalesce:CoalescingHttpToolsProtocol"

_STATUS_LINE = b"HTTP/1.1 "
_END_OF_HEADERS = b"\r\n\r\n"


class CoalescingTransport:
    """A transport proxy that joins a buffered header block with the write that follows it."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._transport.writelines((pending, data))
        elif data.startswith(_STATUS_LINE) and data.endswith(_END_OF_HEADERS):
            self._pending = data
            self._loop.call_soon(self.flush)  # in case no body write follows
        else:
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.flush()
        self._transport.writelines(chunks)

    def flush(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self._transport.is_closing():
                self._transport.write(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(LimitedHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
