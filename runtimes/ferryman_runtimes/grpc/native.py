"""The native gRPC transport: an asyncio HTTP/2 server specialised for unary gRPC.

``grpc.aio`` costs ~220 us of server CPU per call before any work (its C-core and the hop between its
threads and the event loop); this server reads a call, has :class:`~ferryman_runtimes.grpc.service.
InferenceService` answer it and writes the answer from one ``data_received``, on the REST server's loop
(uvloop). Modules: :mod:`~ferryman_runtimes.grpc.framing` (frames), :mod:`~ferryman_runtimes.grpc.headers`
(HPACK), :mod:`~ferryman_runtimes.grpc.stream` (a call's state), :mod:`~ferryman_runtimes.grpc.connection`
(the protocol), this one (listening, TLS, shutdown).

TLS: the REST listener's server context (:func:`ferryman_runtimes.asgi.tls.server_context`) with ALPN
``h2``, reloaded by its :class:`~ferryman_runtimes.asgi.tls.CertReloader` when the files change (new
handshakes get the new certificate). Shutdown: GOAWAY to every connection (calls in flight are answered,
new ones refused so clients retry elsewhere), then connections close when idle or when the grace runs out.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

from ferryman.errors import FerrymanError
from ferryman_runtimes.grpc import framing as f
from ferryman_runtimes.grpc.connection import Connection
from ferryman_runtimes.grpc.context import AsyncService
from ferryman_runtimes.grpc.service import InferenceService

log = logging.getLogger("ferryman.grpc.native")


class NativeServer:
    """Serves ``service``; ``max_message``: the largest request message (over: RESOURCE_EXHAUSTED)."""

    def __init__(
        self,
        service: InferenceService | AsyncService,
        *,
        max_message: int,
        max_streams: int = 1024,
        stream_window: int = 1 << 20,
        connection_window: int = 1 << 24,
        max_frame: int = 1 << 20,
        max_header_list: int = 16_384,
    ) -> None:
        self.service = service
        self.max_message = max_message
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_frame = max_frame
        self.max_header_list = max_header_list
        self.max_header_block = 4 * max_header_list
        self.settings_frame = f.settings(
            {
                f.MAX_CONCURRENT_STREAMS: max_streams,
                f.INITIAL_WINDOW_SIZE: stream_window,
                f.MAX_FRAME_SIZE: max_frame,
                f.MAX_HEADER_LIST_SIZE: max_header_list,
            }
        )
        self.connections: set[Connection] = set()
        self.loop = asyncio.get_running_loop()
        self.server: asyncio.AbstractServer | None = None
        self.reloader: Any = None
        self._drained: asyncio.Event | None = None

    async def listen(
        self,
        *,
        host: str,
        port: int,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Bind host:port (``0``: a free port) and serve; the port bound. A port it cannot take is a
        :class:`FerrymanError` naming the address."""
        context = None
        if tls_cert is not None and tls_key is not None:
            from ferryman_runtimes.asgi.tls import CertReloader, server_context

            cert, key = Path(tls_cert).resolve(), Path(tls_key).resolve()
            context = server_context(cert, key)
            context.set_alpn_protocols(["h2"])
            self.reloader = CertReloader(context, cert=cert, key=key)
            self.reloader.start(self.loop)
        try:
            self.server = await self.loop.create_server(
                lambda: Connection(self),
                host=host,
                port=port,
                ssl=context,
                reuse_port=reuse_port or None,
                backlog=4096,
            )
        except OSError as err:
            if self.reloader is not None:
                self.reloader.stop()
            raise FerrymanError(f"gRPC cannot listen on {host}:{port}: {err}") from err
        for sock in self.server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return int(self.server.sockets[0].getsockname()[1])

    def idle_changed(self) -> None:
        if self._drained is not None and all(c.idle for c in self.connections):
            self._drained.set()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting, GOAWAY every connection, wait up to ``grace`` seconds for open calls, close."""
        if self.reloader is not None:
            self.reloader.stop()
        if self.server is not None:
            self.server.close()
        self._drained = asyncio.Event()
        for connection in list(self.connections):
            connection.goaway()
        self.idle_changed()
        if grace:
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except TimeoutError:
                log.warning(
                    "gRPC shutdown: %d connections still busy after %ss", len(self.connections), grace
                )
        for connection in list(self.connections):
            connection.close()
        self.connections.clear()
        if self.server is not None:
            await self.server.wait_closed()
