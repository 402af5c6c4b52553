"""One HTTP/2 connection of the native gRPC transport: frames in, unary calls dispatched, answers out.

An :class:`asyncio.Protocol` (no task per connection or per call): ``data_received`` parses the frames it
was given, and a call whose request message is complete is answered right there by the service (a batched
version answers from its future's callback). What it implements of RFC 9113 is what gRPC clients use:

- the preface and SETTINGS (ACKed; the peer's INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE are honoured);
- flow control both ways: WINDOW_UPDATE to the client as DATA is consumed, and answers larger than the
  client's stream or connection window wait for its WINDOW_UPDATEs;
- HEADERS + CONTINUATION (HPACK: :mod:`~ferryman_runtimes.grpc.headers`), padding, PRIORITY (ignored),
  PING (ACKed), RST_STREAM (the call is dropped; a batched one still runs and is recorded), GOAWAY both
  ways, and many concurrent streams;
- gRPC on top: ``grpc-timeout`` (DEADLINE_EXCEEDED), the length-prefixed message and its size limit
  (RESOURCE_EXHAUSTED), unknown methods (UNIMPLEMENTED), statuses in trailers.

A protocol violation is a GOAWAY with its error code and the connection closes; the server goes on. A bug
here is logged and closes that connection only (GOAWAY INTERNAL_ERROR).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from ferryman_runtimes.asgi.http import body_too_large
from ferryman_runtimes.grpc import framing as f
from ferryman_runtimes.grpc.compression import CompressionError, inflate
from ferryman_runtimes.grpc.headers import RESPONSE_HEADERS, Decoder, HpackError, trailers, trailers_only
from ferryman_runtimes.grpc.service import SERVICE
from ferryman_runtimes.grpc.stream import Stream, parse_timeout
from ferryman_runtimes.later import Later

if TYPE_CHECKING:
    from ferryman_runtimes.grpc.native import NativeServer

log = logging.getLogger("ferryman.grpc.native")

_PREFIX = "/" + SERVICE + "/"
_OK_TRAILERS = trailers(0)
_INVALID_ARGUMENT, _DEADLINE_EXCEEDED, _UNIMPLEMENTED, _INTERNAL = 3, 4, 12, 13
_RESOURCE_EXHAUSTED = 8
_PING_ACK = f.PING | (f.ACK << 8)


class Connection(asyncio.Protocol):
    """The server side of one client connection (see the module doc)."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.service = server.service
        self.loop = server.loop
        self.transport: Any = None
        self.buffer = bytearray()
        self.preface = False
        self.decoder = Decoder()
        self.streams: dict[int, Stream] = {}
        self.blocked: dict[int, Stream] = {}  # answers waiting for the client's window
        self.last_stream = 0
        self.closing = False  # GOAWAY sent: no new streams
        self.closed = False
        # what the client allows us to send
        self.peer_window = f.DEFAULT_WINDOW  # each new stream's
        self.peer_frame = f.DEFAULT_FRAME_SIZE
        self.send_window = f.DEFAULT_WINDOW  # the connection's
        # what we allow the client to send
        self.recv_window = server.connection_window
        self.recv_unacked = 0
        self.out: list[bytes] | None = None  # writes gathered while reading; None: write at once
        self.continuing: Stream | None = None  # HEADERS without END_HEADERS: CONTINUATION expected
        self.header_block = bytearray()
        self.header_end_stream = False
        self.deadlines: list[Stream] = []  # calls whose deadline may need a timer (see _arm_deadlines)

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        extra = self.server.connection_window - f.DEFAULT_WINDOW
        transport.write(self.server.settings_frame + (f.window_update(0, extra) if extra > 0 else b""))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in self.streams.values():
            stream.close()
        self.streams.clear()
        self.blocked.clear()
        self.server.idle_changed()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.buffer:
            self.buffer += data
            data = bytes(self.buffer)
            self.buffer.clear()
        out: list[bytes] = []
        self.out = out
        try:
            pos = self._frames(data)
            if pos < len(data):
                self.buffer += data[pos:]
        except f.ConnectionError_ as err:
            self._fail(err.code, str(err))
        except Exception:  # a bug must not take the server down: this connection ends
            log.exception("gRPC connection failed")
            self._fail(f.INTERNAL_ERROR, "internal error")
        finally:
            self.out = None
            if out and not self.closed:
                self.transport.write(b"".join(out))
            if self.deadlines:
                self._arm_deadlines()

    def _arm_deadlines(self) -> None:
        """Timers for the calls with a deadline whose message did not arrive with their headers (most do:
        a call answered in the same read never costs a timer)."""
        for stream in self.deadlines:
            if stream.timer is None and not stream.closed and not stream.received_end:
                assert stream.deadline is not None
                stream.timer = self.loop.call_at(stream.deadline, self._expired, stream)
        self.deadlines.clear()

    def _write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.append(data)
        elif not self.closed:
            self.transport.write(data)

    def _fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``code`` and close (what was gathered is written first)."""
        log.debug("gRPC connection error %d: %s", code, message)
        out = self.out or []
        self.out = None
        if not self.closed:
            self.transport.write(b"".join([*out, f.goaway(self.last_stream, code, message.encode()[:200])]))
            # half-close, and close a moment later: closing at once would answer frames the client still
            # sends with a TCP reset, which can destroy the GOAWAY before the client reads it
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)
        self.closed = True

    # -- frames ---------------------------------------------------------------------------------------
    def _frames(self, data: bytes) -> int:
        pos, end = 0, len(data)
        if not self.preface:
            if end < len(f.PREFACE):
                if not f.PREFACE.startswith(data):
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return 0
            if not data.startswith(f.PREFACE):
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.preface = True
            pos = len(f.PREFACE)
        max_frame = self.server.max_frame
        while end - pos >= 9 and not self.closed:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > max_frame:
                raise f.ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {length} bytes over {max_frame}")
            stop = pos + 9 + length
            if stop > end:
                break
            kind, flags = data[pos + 3], data[pos + 4]
            stream_id = f.unpack_u32(data, pos + 5)[0] & 0x7FFFFFFF
            payload = data[pos + 9 : stop]
            pos = stop
            if self.continuing is not None and kind != f.CONTINUATION:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION expected")
            try:
                if kind == f.DATA:
                    self._data(flags, stream_id, payload, length)
                elif kind == f.HEADERS:
                    self._headers(flags, stream_id, payload)
                elif kind == f.CONTINUATION:
                    self._continuation(flags, stream_id, payload)
                elif kind == f.SETTINGS:
                    self._settings(flags, stream_id, payload)
                elif kind == f.WINDOW_UPDATE:
                    self._window_update(stream_id, payload)
                elif kind == f.PING:
                    if stream_id or length != 8:
                        raise f.ConnectionError_(
                            f.PROTOCOL_ERROR if stream_id else f.FRAME_SIZE_ERROR, "PING"
                        )
                    if not flags & f.ACK:
                        self._write(f.ping_ack(payload))
                elif kind == f.RST_STREAM:
                    self._rst_stream(stream_id, payload)
                elif kind == f.GOAWAY:
                    if stream_id:
                        raise f.ConnectionError_(f.PROTOCOL_ERROR, "GOAWAY on a stream")
                    self.closing = True  # the client leaves: answer what is open, start nothing new
                elif kind == f.PRIORITY:
                    if not stream_id or length != 5:
                        raise f.ConnectionError_(f.PROTOCOL_ERROR, "malformed PRIORITY")
                elif kind == f.PUSH_PROMISE:
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # unknown frame types are ignored (section 4.1)
            except f.StreamError as err:
                self._reset(err.stream_id, err.code)
        return pos

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        for at in range(0, len(payload), 6):
            key, value = f.unpack_setting(payload, at)
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.peer_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        self._write(f.SETTINGS_ACK)
        if self.blocked:
            self._unblock()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = f.unpack_u32(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            if self.blocked:
                self._unblock()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a stream we closed: frames in flight are fine
        if not increment:
            raise f.StreamError(stream_id, f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            raise f.StreamError(stream_id, f.FLOW_CONTROL_ERROR, "stream window over 2^31-1")
        if stream.pending_out is not None:
            self._flush(stream)

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if not stream_id or stream_id > self.last_stream:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        stream = self.streams.pop(stream_id, None)
        if stream is not None:  # the client cancelled: drop the call (a batched one still runs)
            stream.close()
            self.blocked.pop(stream_id, None)
            self.server.idle_changed()

    def _reset(self, stream_id: int, code: int) -> None:
        self._write(f.rst_stream(stream_id, code))
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.close()
            self.blocked.pop(stream_id, None)
            self.server.idle_changed()

    # -- requests -------------------------------------------------------------------------------------
    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = f.unpad(flags, payload, stream_id)
        if flags & f.PRIORITY_FLAG:
            if len(block) < 5:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "HEADERS priority fields missing")
            block = block[5:]
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id <= self.last_stream:
                raise f.ConnectionError_(f.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            self.last_stream = stream_id
            stream = Stream(stream_id, self.peer_window, self.server.stream_window)
        elif stream.received_end:
            raise f.StreamError(stream_id, f.STREAM_CLOSED, "HEADERS after the end of the stream")
        if flags & f.END_HEADERS:
            self._header_block(stream, bytes(block), end_stream=bool(flags & f.END_STREAM))
        else:
            self.continuing = stream
            self.header_block = bytearray(block)
            self.header_end_stream = bool(flags & f.END_STREAM)

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self.continuing
        if stream is None or stream.id != stream_id:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self.header_block += payload
        if len(self.header_block) > self.server.max_header_block:
            raise f.ConnectionError_(f.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            self.continuing = None
            block, self.header_block = bytes(self.header_block), bytearray()
            self._header_block(stream, block, end_stream=self.header_end_stream)

    def _header_block(self, stream: Stream, block: bytes, *, end_stream: bool) -> None:
        try:
            headers = self.decoder.decode(block)
        except HpackError as err:
            raise f.ConnectionError_(f.COMPRESSION_ERROR, str(err)) from err
        if stream.id in self.streams:  # trailers from the client: the end of its request
            if not end_stream:
                raise f.StreamError(stream.id, f.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._end(stream)
            return
        if self.closing:
            self._write(f.rst_stream(stream.id, f.REFUSED_STREAM))
            return
        if len(self.streams) >= self.server.max_streams:
            self._write(f.rst_stream(stream.id, f.REFUSED_STREAM))
            return
        self.streams[stream.id] = stream
        stream.received_end = end_stream
        self._start(stream, headers)
        if end_stream and stream.id in self.streams:
            self._end(stream)

    def _start(self, stream: Stream, headers: list[tuple[bytes, bytes]]) -> None:
        """A new call's headers: its method, deadline and metadata (refused now when it cannot be served)."""
        path = method = b""
        size = 0
        metadata = []
        for name, value in headers:
            size += len(name) + len(value) + 32
            if name[:1] == b":":
                if name == b":path":
                    path = value
                elif name == b":method":
                    method = value
            elif name == b"grpc-timeout":
                stream.deadline = parse_timeout(value, self.loop.time())
            elif name == b"grpc-encoding" and value != b"identity":
                stream.encoding = value
            else:
                metadata.append((name, value))
        stream.metadata = metadata
        if method != b"POST" or not path:
            raise f.StreamError(stream.id, f.PROTOCOL_ERROR, "not a gRPC request (POST with a :path)")
        if size > self.server.max_header_list:
            self._answer_error(stream, _RESOURCE_EXHAUSTED, f"metadata of {size} bytes over the limit")
            return
        text = path.decode("latin-1")
        rpc = text[len(_PREFIX) :] if text.startswith(_PREFIX) else ""
        if rpc not in self.service.methods:
            self._answer_error(stream, _UNIMPLEMENTED, f"unknown method {text[:200]}")
            return
        stream.method = rpc
        if stream.deadline is not None and not stream.received_end:
            self.deadlines.append(stream)  # a timer only if its message is still incomplete after this read

    def _data(self, flags: int, stream_id: int, payload: bytes, length: int) -> None:
        if not stream_id:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        if length > self.recv_window:
            raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= length
        self.recv_unacked += length
        if self.recv_unacked >= self.server.connection_window // 2:
            self._write(f.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # answered (or reset) already: its late DATA is dropped, its window given back above
        if stream.received_end:
            raise f.StreamError(stream_id, f.STREAM_CLOSED, "DATA after the end of the stream")
        if length > stream.recv_window:
            raise f.StreamError(stream_id, f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= length
        data = f.unpad(flags, payload, stream_id)
        end = bool(flags & f.END_STREAM)
        if stream.method is not None:  # not already answered (an error on its headers)
            if stream.body is None and end:
                stream.body = data if isinstance(data, bytes) else bytes(data)
            else:
                if stream.body is None:
                    stream.body = bytearray()
                elif isinstance(stream.body, bytes):
                    stream.body = bytearray(stream.body)
                stream.body += data
            declared = stream.declared_length()
            if declared is not None and declared > self.server.max_message:
                message = str(body_too_large(self.server.max_message, declared=declared))
                self._answer_error(stream, _RESOURCE_EXHAUSTED, message.replace("body", "message", 1))
                return
            if declared is not None and len(stream.body) > declared + 5:  # never buffer past one message
                self._answer_error(stream, _INVALID_ARGUMENT, "more than one request message in a unary call")
                return
        if end:
            stream.received_end = True
            self._end(stream)
        elif stream_id in self.streams:
            consumed = self.server.stream_window - stream.recv_window
            if consumed >= self.server.stream_window // 2:
                stream.recv_window += consumed
                self._write(f.window_update(stream_id, consumed))

    def _end(self, stream: Stream) -> None:
        """The client's request is complete: answer the call (or finish closing one answered already)."""
        if stream.method is None or stream.answered:
            self._close(stream)
            return
        if stream.deadline is not None and self.loop.time() >= stream.deadline:
            self._answer_error(stream, _DEADLINE_EXCEEDED, "deadline exceeded before the call started")
            return
        body = stream.body or b""
        if len(body) < 5:
            self._answer_error(stream, _INVALID_ARGUMENT, "no request message (a unary call sends one)")
            return
        if stream.declared_length() != len(body) - 5:
            self._answer_error(
                stream, _INVALID_ARGUMENT, "the request is not exactly one length-prefixed message"
            )
            return
        message = bytes(body[5:]) if not isinstance(body, bytes) else body[5:]
        if body[0]:  # compressed (compression.py)
            try:
                if body[0] != 1:
                    raise CompressionError(
                        grpc.StatusCode.INTERNAL, f"invalid message flag {body[0]} (0 or 1)"
                    )
                message = inflate(stream.encoding, message, limit=self.server.max_message)
            except CompressionError as err:
                self._answer_error(stream, err.code.value[0], str(err))
                return
        stream.body = None
        try:
            outcome = self.service.invoke(stream.method, message, stream.metadata, deadline=stream.deadline)
        except Exception as err:
            self._answer_failure(stream, err)
            return
        if isinstance(outcome, bytes):
            self._answer(stream, outcome)
        else:
            stream.answered = True  # when the outcome resolves (the stream stays open until then)
            if self.service.cancellable and isinstance(outcome, asyncio.Future):
                stream.task = (
                    outcome  # a handler's task (a batched answer is a Later: shared, never cancelled)
                )
            if stream.deadline is not None and stream.timer is None:
                stream.timer = self.loop.call_at(stream.deadline, self._expired, stream)
            outcome.add_done_callback(lambda done: self._finished(stream, done))

    def _finished(self, stream: Stream, done: asyncio.Future[Any] | Later[Any]) -> None:
        """A batched call's answer is ready: send it unless the call was dropped meanwhile."""
        if stream.closed or done.cancelled():
            return
        stream.answered = False
        stream.task = None
        try:
            payload = self.service.finish(done.result())
        except Exception as err:
            self._answer_failure(stream, err)
            return
        self._answer(stream, payload)

    def _answer_failure(self, stream: Stream, err: Exception) -> None:
        """A raised failure as its status (the service maps its own errors; anything else is a bug)."""
        try:
            code, text = self.service.failure(err)
        except TypeError:
            log.error("gRPC %s failed", stream.method, exc_info=err)
            self._answer_error(stream, _INTERNAL, "internal error")
            return
        self._answer_error(stream, code.value[0], text)

    def _expired(self, stream: Stream) -> None:
        stream.timer = None
        if not stream.closed and stream.id in self.streams:
            self._answer_error(stream, _DEADLINE_EXCEEDED, "deadline exceeded")

    # -- answers --------------------------------------------------------------------------------------
    def _answer(self, stream: Stream, payload: bytes) -> None:
        if stream.deadline is not None and self.loop.time() >= stream.deadline:
            self._answer_error(stream, _DEADLINE_EXCEEDED, "deadline exceeded")
            return
        size = len(payload)
        message = b"\x00" + size.to_bytes(4, "big") + payload
        total = size + 5
        sid = stream.id
        head = f.header(len(RESPONSE_HEADERS), f.HEADERS, f.END_HEADERS, sid) + RESPONSE_HEADERS
        if total <= stream.send_window and total <= self.send_window and total <= self.peer_frame:
            self.send_window -= total
            tail = f.header(len(_OK_TRAILERS), f.HEADERS, f.END_HEADERS | f.END_STREAM, sid) + _OK_TRAILERS
            self._write(b"".join((head, f.header(total, f.DATA, 0, sid), message, tail)))
            self._close(stream)
            return
        self._write(head)  # the rest as the client's windows allow
        stream.answered = True
        stream.pending_out = memoryview(message)
        self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        """Send as much of ``stream``'s answer as the windows allow; the trailers once it is all out."""
        out = stream.pending_out
        assert out is not None
        sent = 0
        frames: list[bytes] = []
        while sent < len(out):
            chunk = min(len(out) - sent, stream.send_window, self.send_window, self.peer_frame)
            if chunk <= 0:
                break
            frames.append(f.header(chunk, f.DATA, 0, stream.id))
            frames.append(out[sent : sent + chunk].tobytes())
            sent += chunk
            stream.send_window -= chunk
            self.send_window -= chunk
        if frames:
            self._write(b"".join(frames))
        if sent == len(out):
            stream.pending_out = None
            self.blocked.pop(stream.id, None)
            self._write(f.header(len(_OK_TRAILERS), f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id))
            self._write(_OK_TRAILERS)
            self._close(stream)
        else:
            stream.pending_out = out[sent:]
            self.blocked[stream.id] = stream

    def _unblock(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                break
            if stream.pending_out is not None and stream.send_window > 0:
                self._flush(stream)

    def _answer_error(self, stream: Stream, code: int, message: str) -> None:
        """A Trailers-Only answer with ``code``; a call whose request is still arriving is reset after it."""
        block = trailers_only(code, message[:1024])
        self._write(f.header(len(block), f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id) + block)
        stream.answered = True
        stream.method = None
        stream.body = None
        self.blocked.pop(stream.id, None)
        stream.pending_out = None
        self._close(stream)

    def _close(self, stream: Stream) -> None:
        """Our side is done: forget the stream (reset it when the client is still sending)."""
        if not stream.received_end and stream.id in self.streams:
            self._write(f.rst_stream(stream.id, f.NO_ERROR))
        stream.close()
        if self.streams.pop(stream.id, None) is not None and self.closing:
            self.server.idle_changed()

    # -- shutdown -------------------------------------------------------------------------------------
    def goaway(self) -> None:
        """Graceful shutdown: no new streams after the last one seen; open calls are still answered."""
        if not self.closing and not self.closed:
            self.closing = True
            self._write(f.goaway(self.last_stream, f.NO_ERROR))

    @property
    def idle(self) -> bool:
        return not self.streams

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
