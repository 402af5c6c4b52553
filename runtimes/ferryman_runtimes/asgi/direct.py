"""Direct dispatch: predictions answered straight from the HTTP protocol, without an ASGI task.

uvicorn runs every request as an ASGI cycle: a task, a request/response cycle object, an ``asyncio.Event``,
``receive``/``send`` awaitables, header normalisation in ``send``, and a keep-alive timer. For a model that
costs microseconds, that machinery costs more than the inference (docs/benchmarks.md). This protocol
(uvicorn's httptools protocol with ferryman's limits and one write per response, see :mod:`.limits` and
:mod:`.coalesce`) answers the one route that matters for speed itself:

* when a request's headers are complete, it asks the app (through its wrappers) whether the request is a
  *direct target* (``app.direct_target(method, path)``: a ``POST`` prediction computed in this process);
* if so, no ASGI cycle is made. ``app.direct_start(request)`` admits it at once (the plan: model and
  protocol, and an in-flight slot), or refuses it (``401``, ``404``, ``503``: answered when the body has
  been read past, the connection kept). The body is collected as the parser delivers it, within the app's
  body limit (beyond it, or past the receive deadline: ``413``/``408`` and the connection closes), and on the
  message's end ``app.direct_finish(plan, request, body, t0=...)`` returns ``(status, headers, body)``
  synchronously; the response is written in one call. A client that goes away mid-body is recorded as such
  and its slot given back.
* ``direct_finish`` may instead return a future of the answer (a version with adaptive batching: its batch
  runs on a worker thread). The answer is written when the future resolves; meanwhile the connection counts
  as busy, so a request pipelined behind it waits in uvicorn's pipeline, exactly as behind a request on the
  ASGI path, and answers stay in order. A client that goes away before the answer only loses its answer.
* everything else — other routes, ``Expect: 100-continue``, upgrades, a request pipelined behind one still
  on the ASGI path (answers stay in order), a percent-encoded path — takes uvicorn's ASGI path unchanged.

An app takes part by having ``direct_target``, ``direct_start`` and ``direct_finish``
(:class:`~ferryman_runtimes.asgi.app.InferenceApp` and the API-key middleware, which checks the key
first). A wrapper without them (any other middleware) turns direct dispatch off, so nothing a wrapper does
is ever skipped; uvicorn's own proxy-headers middleware only rewrites the client address and scheme, which
predictions do not read. The answers, errors, metrics,
limits and keep-alive behaviour are the same on both paths (the integration tests run both).
"""

from __future__ import annotations

import asyncio
import http
from time import perf_counter
from typing import Any, cast

import httptools

from ferryman.errors import FerrymanError, InvalidInput, RequestTimeout
from ferryman.spec import Limits
from ferryman_runtimes.asgi.app import Answer, Answered, Plan, error_answer
from ferryman_runtimes.asgi.coalesce import CoalescingHttpToolsProtocol
from ferryman_runtimes.asgi.http import Request, body_too_large
from ferryman_runtimes.asgi.limits import limits_of
from ferryman_runtimes.later import Later

PROTOCOL = "ferryman_runtimes.asgi.direct:DirectHttpToolsProtocol"

_PASS_THROUGH = ("uvicorn.middleware.proxy_headers",)  # uvicorn's wrappers a prediction does not depend on
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}


def direct_app(app: Any) -> Any | None:
    """The outermost app that answers directly, seen through uvicorn's pass-through wrappers; None when
    any wrapper in between does not take part."""
    for _ in range(8):
        if all(callable(getattr(app, m, None)) for m in ("direct_target", "direct_start", "direct_finish")):
            return app
        if type(app).__module__ not in _PASS_THROUGH:
            return None
        app = getattr(app, "app", None)
    return None


_defaults: list[Any] = [None, b""]  # (uvicorn's default header list, the same as bytes)


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default response headers (server, date) as bytes; uvicorn replaces the list every second."""
    if headers is not _defaults[0]:
        _defaults[1] = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        _defaults[0] = headers
    return _defaults[1]  # type: ignore[no-any-return]


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status\r\n".encode()


class _Later:
    """Stands in as uvicorn's current cycle while a direct answer is pending (see ``_later``): its response is
    incomplete, so uvicorn queues a pipelined request behind it and graceful shutdown marks it not to keep
    the connection alive."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete")
    response_started = False
    more_body = False

    def __init__(self) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True
        self.message_event = asyncio.Event()


class DirectHttpToolsProtocol(CoalescingHttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: Any = direct_app(self.app)  # None: every request takes the ASGI path
        self._max_body = int((limits_of(self.app) or Limits()).max_body_bytes)
        self._taken = False  # this request is answered here
        self._request: Request | None = None
        self._plan: Any = None  # admitted: the app holds an in-flight slot for it until direct_finish
        self._refusal: Answer | None = None  # refused at admission: sent once the body has been read past
        self._chunks: list[bytes] = []
        self._size = 0
        self._keep_alive = True
        self._t0 = 0.0
        self._paused_for_write = False
        self._idle_since: float | None = (
            None  # when the last direct answer was written, while nothing arrived
        )
        self._idle_timer: asyncio.TimerHandle | None = None
        self.direct_answers = 0  # requests this connection answered without an ASGI task

    # -- parser callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._taken = False

    def on_headers_complete(self) -> None:
        direct = self._direct
        parser = self.parser
        if (
            direct is None
            or self.expect_100_continue
            or parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            return super().on_headers_complete()
        method = parser.get_method().decode("ascii")
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path or self.root_path or not direct.direct_target(method, path):
            return super().on_headers_complete()
        self._in_headers = False
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = method
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = url.query or b""
        self._taken = True
        self._chunks = []
        self._size = 0
        self._keep_alive = http_version != "1.0" and parser.should_keep_alive()
        self._t0 = perf_counter()
        request = self._request = Request(cast(dict[str, Any], scope))
        started = direct.direct_start(request)
        if isinstance(started, Plan):
            self._plan, self._refusal = started, None
        else:
            self._plan, self._refusal = None, started
        for name, value in self.headers:
            if name == b"content-length":  # the parser has checked it is a number
                if int(value) > self._max_body:
                    self._refuse(body_too_large(self._max_body, declared=int(value)))
                break

    def on_body(self, body: bytes) -> None:
        if not self._taken:
            return super().on_body(body)
        if not self._receiving:
            return  # already refused
        self._size += len(body)
        if self._size > self._max_body:
            self._refuse(body_too_large(self._max_body))
        elif self._plan is not None:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        if not self._taken:
            return super().on_message_complete()
        if not self._receiving:
            return
        self._receiving = False
        self._disarm()
        answered = self._finish(None)
        if isinstance(answered, tuple):
            self._respond(*answered)
        else:
            self._later(answered)

    def _body_timed_out(self, message: str) -> None:
        if not self._taken:
            return super()._body_timed_out(message)
        self._refuse(RequestTimeout(message))

    # -- answers ------------------------------------------------------------------------------------
    def _finish(self, failure: FerrymanError | None) -> Answered:
        """The app's answer to the admitted request (or its refusal), giving the app's slot back."""
        plan, self._plan = self._plan, None
        if plan is None:
            assert self._refusal is not None or failure is not None
            return self._refusal if self._refusal is not None else error_answer(failure)  # type: ignore[arg-type]
        chunks, self._chunks = self._chunks, []
        body = b"" if failure is not None else chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._direct.direct_finish(
            plan,
            self._request,
            body,
            t0=self._t0,  # type: ignore[no-any-return]
            failure=failure,
        )

    def _refuse(self, err: FerrymanError) -> None:
        """Stop receiving this request: answer ``err`` (recorded by the app when it had admitted the request),
        then close the connection (the rest of the body is not worth reading)."""
        self._receiving = False
        self._disarm()
        self._keep_alive = False
        self._refusal = None
        answered = self._finish(err)  # a failure is answered at once
        assert isinstance(answered, tuple)
        self._respond(*answered)

    def _later(self, answer: Later[Answer]) -> None:
        """Write ``answer`` the moment it resolves (in the batcher's hand-back, not a loop turn later); until
        then the connection is busy (see the module docstring)."""
        pending = _Later()
        self.cycle = pending  # type: ignore[assignment]
        keep_alive = self._keep_alive

        def write(future: Later[Answer]) -> None:
            pending.response_complete = True
            self._keep_alive = keep_alive and pending.keep_alive
            self._respond(*future.result())
            if self.transport.is_closing():
                return
            if (
                self.pipeline
            ):  # what uvicorn queued behind the pending answer (HttpToolsProtocol.on_response_complete)
                if not self._paused_for_write:
                    self.flow.resume_reading()
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)

        answer.add_done_callback(write)

    def _respond(self, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        keep_alive = self._keep_alive
        out = [status_line(status), _default_headers(self.server_state.default_headers)]
        for name, value in headers:
            if name == b"connection" and value.lower() == b"close":
                keep_alive = False
                continue
            out += (name, b": ", value, b"\r\n")
        out += (
            b"content-length: ",
            str(len(payload)).encode(),
            b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n",
            payload,
        )
        transport.write(b"".join(out))
        self.server_state.total_requests += 1
        self.direct_answers += 1
        if not keep_alive:
            transport.close()
            return
        if self.flow.write_paused:
            # a pipelining client that does not read its answers: stop reading more requests until it does
            self.flow.pause_reading()
            self._paused_for_write = True
        # idle from now on: one timer per keep-alive period, not one per request (see _idle_check)
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    # -- keep-alive ---------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._idle_since = None  # busy: a request is arriving
        super().data_received(data)

    def _idle_check(self) -> None:
        """Close a connection idle for the keep-alive timeout since its last direct answer; else look again
        when it could be. (A request on the ASGI path is timed by uvicorn's own keep-alive timer.)"""
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._taken and self._plan is not None:
            self._finish(
                InvalidInput("client disconnected before sending the whole body")
            )  # recorded, not sent
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused_for_write:
            self._paused_for_write = False
            self.flow.resume_reading()
