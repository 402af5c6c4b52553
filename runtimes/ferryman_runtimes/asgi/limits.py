"""Connection-level limits uvicorn's httptools protocol lacks: header size, URL size, header read time.

uvicorn (httptools) buffers request headers without bound and waits for them forever: a client can send a
megabyte header or trickle one byte a minute (slowloris) and hold memory and a connection. This protocol
class adds, per request:

* a cap on the request line's target (``414``) and on the total header bytes (``431``) — checked as the
  parser reports each header, and as a coarse guard on the raw bytes buffered while the header block is
  still incomplete (so one endless header cannot grow inside the parser either);
* a header deadline (``408``): the header block must be complete within the request timeout, counted from
  the connection's start or from the first byte of a keep-alive request. A connection that sends nothing
  at all is closed silently at the deadline.

The body's own deadline is the application's (``InferenceApp`` answers ``408`` when the body is slower than
``limits.request_timeout_seconds``). The limits come from the served app's ``limits`` attribute (found by
walking ``.app`` wrappers, e.g. the API-key middleware), defaulting to :class:`ferryman.spec.Limits`.

Use it with ``uvicorn.Config(http=PROTOCOL)`` (an import string, so multi-worker mode can spawn it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ferryman.spec import Limits

PROTOCOL = "ferryman_runtimes.asgi.limits:LimitedHttpToolsProtocol"

MAX_HEADER_BYTES = 64 * 1024  # all header names and values of one request
MAX_URL_BYTES = 16 * 1024  # the request target (path and query)

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing; carries the status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def limits_of(app: Any) -> Limits | None:
    """The ``limits`` of ``app`` or of the app it wraps (``.app``), if any."""
    for _ in range(8):
        limits = getattr(app, "limits", None)
        if isinstance(limits, Limits):
            return limits
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = limits_of(self.app) or Limits()
        self.header_timeout = float(limits.request_timeout_seconds)
        self.max_header_bytes = int(getattr(limits, "max_header_bytes", MAX_HEADER_BYTES))
        self.max_url_bytes = MAX_URL_BYTES
        self._in_headers = False
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._received_any = False
        self._header_timer: asyncio.TimerHandle | None = None

    # -- the header deadline ------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._received_any and self._in_headers:
            self._reject(408, f"request headers not received within {self.header_timeout:g}s")
        else:
            self.transport.close()

    # -- protocol interface -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if self.parser is None:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as err:
            cause = err.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, str(cause))
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_headers:
            # headers still incomplete: bound what the parser may be holding for an unfinished header
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > 2 * (self.max_header_bytes + self.max_url_bytes):
                self._reject(431, f"request headers exceed {self.max_header_bytes} bytes")

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url_bytes:
            raise _Reject(414, f"request target exceeds {self.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Reject(431, f"request headers exceed {self.max_header_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    # -- answers ------------------------------------------------------------------------------------
    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close (never while another response is being written)."""
        self._disarm_header_timer()
        self._in_headers = False
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy:
            body = orjson.dumps({"error": message})
            self.transport.write(b"".join([
                b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"Error"), b"\r\n",
                b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"connection: close\r\n\r\n", body,
            ]))
        self.transport.close()
