"""Connection-level limits uvicorn's httptools protocol lacks: header size, target size, time to receive a
request.

uvicorn (httptools) buffers request headers without bound and waits for headers and body forever: a client
can send a megabyte header, or trickle a byte a minute (slowloris), and hold memory and a connection. This
protocol class adds, per request:

* a cap on the request target (``414``) and on the total header bytes (``431``) — checked as the parser
  reports each header, and as a coarse guard on the raw bytes buffered while the header block is still
  incomplete (so one endless header cannot grow inside the parser either);
* a receive deadline: the whole request — headers and body — must arrive within the request timeout,
  counted from the connection's start or from the first byte of a keep-alive request. Missing headers get
  ``408`` from here; a body still missing gets ``408`` too, the application sees a disconnect (the
  ``ferryman.timed_out`` scope key tells :func:`ferryman_runtimes.asgi.http.read_body` to report it as a
  timeout). A connection that sends nothing at all is closed silently.

The deadline costs nothing on the common path: its timer is armed only when a request is still incomplete
after a read (a request that arrives in one piece never touches the event loop's timers). The limits come
from the served app's ``limits`` (found through ``.app`` wrappers such as the API-key middleware), defaulting
to :class:`ferryman.spec.Limits`.

Use it with ``uvicorn.Config(http=PROTOCOL)`` (an import string, so multi-worker mode can spawn it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson

from ferryman.spec import Limits
from ferryman_runtimes._compat.uvicorn_http import HttpToolsProtocol
from ferryman_runtimes.asgi.http import TIMED_OUT

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
        self.receive_timeout = float(limits.request_timeout_seconds)
        self.max_header_bytes = int(getattr(limits, "max_header_bytes", MAX_HEADER_BYTES))
        self.max_url_bytes = MAX_URL_BYTES
        self._receiving = True  # between a message's first byte (or the connection's start) and its end
        self._in_headers = True
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._received_any = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- the receive deadline -----------------------------------------------------------------------
    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.receive_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing() or not self._receiving:
            return
        if not self._received_any:
            self.transport.close()  # connected and said nothing
        elif self._in_headers:
            self._reject(408, f"request headers not received within {self.receive_timeout:g}s")
        else:
            self._body_timed_out(f"request body not received within {self.receive_timeout:g}s")

    def _body_timed_out(self, message: str) -> None:
        if self.scope is not None:
            self.scope[TIMED_OUT] = True  # type: ignore[literal-required]
        self._reject(408, message, body=True)

    # -- protocol interface -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
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
            else:
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
        if self._receiving:
            self._arm()  # the request is still incomplete: from now on it has a deadline
            if self._in_headers:
                # bound what the parser may be holding for an unfinished header
                self._raw_header_bytes += len(data)
                if self._raw_header_bytes > 2 * (self.max_header_bytes + self.max_url_bytes):
                    self._reject(431, f"request headers exceed {self.max_header_bytes} bytes")

    def _bad_request(self) -> None:
        self._disarm()
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._in_headers = True
        self._header_bytes = 0
        self._raw_header_bytes = 0

    # on_url and on_header run for every request and header: uvicorn's own bodies (collect the target;
    # lower-case
    # the name, note Expect: 100-continue, keep the header) are inlined rather than called through super()
    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_url_bytes:
            raise _Reject(414, f"request target exceeds {self.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Reject(431, f"request headers exceed {self.max_header_bytes} bytes")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._receiving = False
        self._disarm()
        super().on_message_complete()

    # -- answers ------------------------------------------------------------------------------------
    def _reject(self, status: int, message: str, *, body: bool = False) -> None:
        """Answer ``status`` with a JSON error and close — unless a response is already being written.

        In the header phase the cycle (if any) is the previous request's; for a late ``body`` it is this
        one's."""
        self._disarm()
        self._receiving = False
        if self.transport.is_closing():
            return
        cycle = self.cycle
        free = (
            (cycle is not None and not cycle.response_started)
            if body
            else (cycle is None or cycle.response_complete)
        )
        if free:
            payload = orjson.dumps({"error": message})
            self.transport.write(
                b"".join(
                    [
                        b"HTTP/1.1 ",
                        str(status).encode(),
                        b" ",
                        _REASONS.get(status, b"Error"),
                        b"\r\n",
                        b"content-type: application/json\r\n",
                        b"content-length: ",
                        str(len(payload)).encode(),
                        b"\r\n",
                        b"connection: close\r\n\r\n",
                        payload,
                    ]
                )
            )
        self.transport.close()
