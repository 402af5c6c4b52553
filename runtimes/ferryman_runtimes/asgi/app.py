"""A minimal ASGI application speaking KServe v1 and the Open Inference Protocol v2.

No web framework on the hot path: the path is split once, the body is read once, orjson encodes, and
ONNX Runtime runs in the event-loop thread (an 11 microsecond call is cheaper than a thread hop).
Subclasses (the gateway) override :meth:`InferenceApp.select` to choose the version per request.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple

import orjson

from ferryman import openapi
from ferryman.dataplane import DataPlane
from ferryman.engine import OnnxModel
from ferryman.errors import (
    FerrymanError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
)
from ferryman.protocol import v1, v2
from ferryman.protocol.tensor import InferRequest, InferResponse
from ferryman.telemetry import NullObserver, RequestObserver, RequestRecord
from ferryman_runtimes.asgi.http import Request, read_body, send_bytes, send_json
from ferryman_runtimes.later import Later

log = logging.getLogger("ferryman.server")

_JSON = b"application/json"
_JSON_HEADERS = [(b"content-type", _JSON)]

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers (no content-length), body
# An answer now, or later: a batched version's answer is ready when its batch has run (see answer()); a
# Later calls whoever waits for it the moment it is resolved (the response is written in the same loop turn).
Answered = Answer | Later[Answer]


class Plan(NamedTuple):
    """A prediction request's model and protocol: decode the body, encode the response."""

    name: str
    version: str | None
    protocol: str  # "v1", "v2" or "v2-binary" (a metrics label)
    decode: Callable[[bytes], InferRequest]
    encode: Callable[[InferResponse, InferRequest], tuple[bytes, list[tuple[bytes, bytes]]]]


def error_answer(err: FerrymanError) -> Answer:
    """The HTTP answer to a domain error: its status, ``{"error": message}``, and the headers it calls for."""
    headers = list(_JSON_HEADERS)
    if isinstance(err, Overloaded):
        headers.append((b"retry-after", str(err.retry_after_seconds).encode()))
    elif isinstance(err, RequestTimeout):
        headers.append((b"connection", b"close"))  # the rest of a trickled body is not worth waiting for
    return err.status, headers, orjson.dumps({"error": str(err)})


def _is_prediction(parts: list[str]) -> bool:
    """``/v2/models/.../infer`` or ``/v1/models/...:predict`` (split on "/")."""
    if len(parts) < 4 or parts[2] != "models":
        return False
    return (parts[1] == "v2" and parts[-1] == "infer") or (
        parts[1] == "v1" and parts[-1].endswith(":predict")
    )


def is_prediction_path(path: str) -> bool:
    return _is_prediction(path.split("/"))


class Selection:
    """Which model version answers a request, under which route label, and an optional shadow copy."""

    __slots__ = ("model", "route", "seq", "shadow")

    def __init__(self, model: OnnxModel, route: str, shadow: OnnxModel | None = None) -> None:
        self.model = model
        self.route = route
        self.shadow = shadow
        self.seq = 0  # the gateway's number for a request it named (see gateway.predictions)


class InferenceApp:
    openapi_kind = "runtime"
    api_keys_required = (
        False  # set by the API-key middleware (ferryman_runtimes.asgi.security) it is wrapped in
    )

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        observer: RequestObserver | None = None,
        extra_routes: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.repository = dataplane.repository
        self.limits = dataplane.limits
        if observer is not None and not isinstance(observer, RequestObserver):
            raise TypeError(
                f"{type(observer).__qualname__} is not a ferryman.telemetry.RequestObserver (subclass it)"
            )
        self.observer: RequestObserver = observer or NullObserver()
        self.extra_routes = extra_routes or {}
        self.in_flight = 0
        # (model, version) -> its adaptive batcher (ferryman_runtimes.native.batcher), for batched versions
        self.batchers: dict[tuple[str, str], Any] = {}
        # the base class's after_response does nothing: skip awaiting it on every request
        self.has_after_response = type(self).after_response is not InferenceApp.after_response

    # -- extension points ---------------------------------------------------------------------------
    # Whether ``compute`` must be awaited (the Ray ingress: a remote version is a handle call). The native
    # path calls the data plane directly: no coroutine per request.
    async_compute = False

    async def compute(self, model: OnnxModel, infer: InferRequest) -> InferResponse:
        return self.dataplane.infer(model, infer)

    def computes_here(self, model: OnnxModel) -> bool:
        """Whether ``model`` runs in this process (its compute time and rows are recorded here)."""
        return True

    def select(
        self, model_name: str, version: str | None, request: Request, infer: InferRequest
    ) -> Selection:
        model = self.repository.get(model_name, version)
        return Selection(model, "pinned" if version else "direct")

    def after_response(
        self, selection: Selection, request: Request, infer: InferRequest, response: InferResponse | None
    ) -> None:
        """Runs once the answer is ready, just before it is written (the gateway remembers it for A/B
        feedback and starts the shadow copy here, as a task that runs after the caller has its answer)."""

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(Request(scope), receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def startup(self) -> None:
        freeze_heap()

    async def shutdown(self) -> None:
        return None

    async def handle(self, request: Request, receive: Any, send: Any) -> None:
        parts = request.path.split("/")
        try:
            if _is_prediction(parts):
                if request.method == "POST":
                    return await self._serve(request, parts, receive, send)
                return await send_json(
                    send,
                    405,
                    {
                        "error": f"method {request.method} not allowed on "
                        f"{request.path[:200]}: predictions take POST"
                    },
                    headers=[(b"allow", b"POST")],
                )
            if request.method in ("GET", "HEAD"):
                return await self.get(request, parts, send)
            handler = self.extra_routes.get((request.method, request.path))
            if handler is not None:
                return await handler(request, receive, send)
            if request.method not in ("GET", "HEAD", "POST"):
                return await send_json(send, 405, {"error": f"method {request.method} not allowed"})
            return await send_json(send, 404, {"error": f"no route for {request.method} {request.path}"})
        except FerrymanError as err:
            await self.send_error(send, err)

    async def send_error(self, send: Any, err: FerrymanError) -> None:
        status, headers, payload = error_answer(err)
        await send_bytes(send, status, payload, headers)

    # -- OpenAPI ------------------------------------------------------------------------------------
    def openapi_route_headers(self) -> list[str]:
        """Request headers that steer routing (the gateway's version pin and sticky key)."""
        return []

    def openapi_document(self) -> dict[str, Any]:
        models = {}
        for name, versions in self.repository.models.items():
            model = self.repository.get(name)
            models[name] = openapi.ModelDoc(
                versions=sorted(versions),
                inputs=[t.to_v2() for t in model.signature.inputs],
                outputs=[t.to_v2() for t in model.signature.outputs],
            )
        return openapi.document(
            kind=self.openapi_kind,
            models=models,
            api_keys=self.api_keys_required,
            route_headers=self.openapi_route_headers(),
            metrics=("GET", "/metrics") in self.extra_routes,
        )

    # -- GET endpoints ------------------------------------------------------------------------------
    async def get(self, request: Request, parts: list[str], send: Any) -> None:
        path = request.path
        if path == "/v2/health/live" or path == "/healthz" or path == "/v1/health/live":
            return await send_json(send, 200, {"live": True})
        if path == "/v2/health/ready" or path == "/readyz":
            ready = self.repository.ready
            return await send_json(send, 200 if ready else 503, {"ready": ready})
        if path == "/v2":
            return await send_json(send, 200, self.dataplane.server_metadata())
        if path == "/v1/models":
            return await send_json(send, 200, {"models": self.repository.names()})
        if path == "/openapi.json":
            return await send_json(send, 200, self.openapi_document())
        handler = self.extra_routes.get((request.method, path)) or self.extra_routes.get(("GET", path))
        if handler is not None:
            return await handler(request, None, send)
        if len(parts) >= 4 and parts[2] == "models" and parts[1] in ("v1", "v2"):
            name, version, rest = _model_path(parts)
            model = self.repository.get(name, version)
            if parts[1] == "v1" and not rest:
                ready = self.repository.ready
                return await send_json(
                    send, 200, {"name": name, "ready": ready, "model_version": model.version}
                )
            if parts[1] == "v2" and not rest:
                return await send_json(send, 200, self.dataplane.model_metadata(model))
            if parts[1] == "v2" and rest == ["ready"]:
                ready = self.repository.ready
                return await send_json(send, 200 if ready else 503, {"name": name, "ready": ready})
        return await send_json(send, 404, {"error": f"no route for GET {path}"})

    # -- inference ----------------------------------------------------------------------------------
    def _admit(self, name: str) -> None:
        if not self.repository.ready:
            raise NotReady("server is not ready")
        if name not in self.repository.models:
            raise ModelNotFound(f"model {name!r} not found (serving: {self.repository.names()})")
        if self.in_flight >= self.limits.max_in_flight:
            raise Overloaded(f"too many requests in flight ({self.limits.max_in_flight}); retry later")

    def plan(self, request: Request, parts: list[str]) -> Plan:
        """How to answer a prediction request (``POST`` to a v1 ``:predict`` or v2 ``/infer`` path): which
        model, and the protocol's decoder and encoder. Raises the request's error (unknown model, not
        ready)."""
        if parts[1] == "v2":
            return self._plan_v2(request, parts)
        return self._plan_v1(request, parts)

    def _plan_v2(self, request: Request, parts: list[str]) -> Plan:
        name, version, rest = _model_path(parts)
        if rest != ["infer"]:
            raise ModelNotFound(f"no route for POST {request.path}")
        self._admit(name)
        if version is not None:
            self.repository.get(name, version)  # an unknown pinned version is a 404, whatever the body
        header_length = request.header(b"inference-header-content-length")
        if header_length is None:
            return Plan(name, version, "v2", self._decode_v2_json, self._encode_v2)
        max_elements = self.limits.max_elements

        def decode(body: bytes) -> InferRequest:
            hl = v2.parse_header_length(header_length)
            return v2.decode_request(body, header_length=hl, max_elements=max_elements)

        return Plan(name, version, "v2-binary", decode, self._encode_v2)

    def _decode_v2_json(self, body: bytes) -> InferRequest:
        return v2.decode_request(body, header_length=None, max_elements=self.limits.max_elements)

    @staticmethod
    def _encode_v2(response: InferResponse, infer: InferRequest) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        binary = _binary_outputs(infer, response)
        body, hl = v2.encode_response(response, binary_names=binary)
        if hl is None:
            return body, _JSON_HEADERS  # shared: answers are never mutated
        return body, [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(hl).encode()),
        ]

    def _plan_v1(self, request: Request, parts: list[str]) -> Plan:
        parts = [*parts[:-1], parts[-1][: -len(":predict")]]
        name, version, rest = _model_path(parts)
        if rest:
            raise ModelNotFound(f"no route for POST {request.path}")
        self._admit(name)
        signature = self.repository.get(name, version).signature

        def decode(body: bytes) -> InferRequest:
            return v1.decode_request(body, signature)

        def encode(response: InferResponse, infer: InferRequest) -> tuple[bytes, list[tuple[bytes, bytes]]]:
            return v1.encode_response(response), _JSON_HEADERS

        return Plan(name, version, "v1", decode, encode)

    def start(self, request: Request, parts: list[str]) -> Plan:
        """Admit a prediction request (its headers have arrived): plan it and take an in-flight slot, which
        :meth:`answer` gives back. Raises the request's error (unknown model, not ready, overloaded)."""
        plan = self.plan(request, parts)
        self.in_flight += 1
        self.observer.started(plan.name)
        return plan

    def admit(self, plan: Plan) -> Plan:
        """:meth:`start` for a plan another transport made (gRPC: the model and version are in the message,
        its decoder and encoder speak protobuf): the same admission, checks and in-flight slot."""
        self._admit(plan.name)
        if plan.version is not None:
            self.repository.get(
                plan.name, plan.version
            )  # an unknown pinned version: NotFound, whatever the body
        self.in_flight += 1
        self.observer.started(plan.name)
        return plan

    async def _serve(self, request: Request, parts: list[str], receive: Any, send: Any) -> None:
        """A prediction over ASGI: admit, read the body, answer, send."""
        plan = self.start(request, parts)  # its errors are answered by handle()
        t0 = perf_counter()
        if self.async_compute:
            return await self._serve_async(plan, request, receive, send, t0=t0)
        failure: FerrymanError | None = None
        body = b""
        try:
            body = await read_body(request, receive, limit=self.limits.max_body_bytes)
        except FerrymanError as err:
            failure = err
        except BaseException:  # cancelled while waiting for the body: give the slot back, record it
            self.answer(
                plan, request, b"", t0=t0, failure=InvalidInput("request cancelled before its body arrived")
            )
            raise
        answered = self.answer(plan, request, body, t0=t0, failure=failure)
        status, headers, payload = answered if isinstance(answered, tuple) else await answered
        await send_bytes(send, status, payload, headers)

    def answer(
        self, plan: Plan, request: Request, body: bytes, *, t0: float, failure: FerrymanError | None = None
    ) -> Answered:
        """Answer an admitted prediction (see :meth:`start`) whose whole body has arrived, synchronously:
        decode, route, infer, encode, record, and give the in-flight slot back. Never raises: an error becomes
        its HTTP answer. ``failure`` is an error met while reading the body (recorded like any other). The
        after-response hook runs before the caller writes the answer; what it starts (a shadow copy) runs on
        the event loop after this returns. A version with a batcher answers later: a :class:`Later` answer,
        resolved on the loop once its batch has run (a request it refuses up front is answered now)."""
        record = RequestRecord(plan.name, "", "", plan.protocol, 200, 0.0)
        infer: InferRequest | None = None
        response: InferResponse | None = None
        selection: Selection | None = None
        later: Later[Answer] | None = None
        try:
            if failure is not None:
                raise failure
            infer = plan.decode(body)
            selection = self._routed(plan, request, infer, record)
            if self.batchers:
                batcher = self.batchers.get((selection.model.name, selection.model.version))
                if batcher is not None:
                    later = self._batched(batcher, plan, request, infer, selection, record, t0=t0)
                    return later
            c0 = perf_counter()
            response = self.dataplane.infer(selection.model, infer)
            _computed(record, infer, c0)
            payload, headers = plan.encode(response, infer)
            result: Answer = (200, headers, payload)
        except Exception as err:  # every failure becomes an answer (see _failed)
            result = self._failed(record, request, err)
        finally:
            if later is None:
                self._finished(record, t0=t0, infer=infer, response=response)
        if self.has_after_response and selection is not None and infer is not None:
            self.after_response(selection, request, infer, response)
        return result

    def _batched(
        self,
        batcher: Any,
        plan: Plan,
        request: Request,
        infer: InferRequest,
        selection: Selection,
        record: RequestRecord,
        *,
        t0: float,
    ) -> Later[Answer]:
        """Queue the request on its version's batcher; its answer later, recorded when it resolves.
        Raises what refuses it alone, before it is queued (invalid input, a full queue)."""
        model = selection.model
        feed, names = self.dataplane.prepare(model, infer)
        work = batcher.submit(feed, names)
        answer: Later[Answer] = Later()

        def done(work: Later[tuple[list[Any], float]]) -> None:
            response: InferResponse | None = None
            try:
                arrays, record.compute_seconds = work.result()
                shape = infer.inputs[0].shape
                record.rows = shape[0] if shape else 1
                response = self.dataplane.respond(model, infer, names, arrays)
                payload, headers = plan.encode(response, infer)
                result: Answer = (200, headers, payload)
            except Exception as err:  # every failure becomes an answer (see _failed)
                result = self._failed(record, request, err)
            finally:
                self._finished(record, t0=t0, infer=infer, response=response)
            if self.has_after_response:
                self.after_response(selection, request, infer, response)
            answer.set_result(result)

        work.add_done_callback(done)
        return answer

    def _routed(self, plan: Plan, request: Request, infer: InferRequest, record: RequestRecord) -> Selection:
        selection = self.select(plan.name, plan.version, request, infer)
        record.version = selection.model.version
        record.route = selection.route
        return selection

    def _finished(
        self, record: RequestRecord, *, t0: float, infer: InferRequest | None, response: InferResponse | None
    ) -> None:
        """Give the in-flight slot back and record the request (its code is set by now)."""
        self.in_flight -= 1
        record.seconds = perf_counter() - t0
        self.observer.finished(record, infer, response)

    async def _serve_async(self, plan: Plan, request: Request, receive: Any, send: Any, *, t0: float) -> None:
        """:meth:`answer` for an app whose compute is awaited (a remote version: the Ray ingress)."""
        record = RequestRecord(plan.name, "", "", plan.protocol, 200, 0.0)
        infer: InferRequest | None = None
        response: InferResponse | None = None
        selection: Selection | None = None
        try:
            infer = plan.decode(await read_body(request, receive, limit=self.limits.max_body_bytes))
            selection = self._routed(plan, request, infer, record)
            c0 = perf_counter()
            response = await self.compute(selection.model, infer)
            if self.computes_here(selection.model):  # remote compute is measured where it runs
                _computed(record, infer, c0)
            payload, headers = plan.encode(response, infer)
            result: Answer = (200, headers, payload)
        except Exception as err:  # every failure becomes an answer (see _failed)
            result = self._failed(record, request, err)
        finally:
            self._finished(record, t0=t0, infer=infer, response=response)
        if self.has_after_response and selection is not None and infer is not None:
            self.after_response(selection, request, infer, response)
        await send_bytes(send, result[0], result[2], result[1])

    def _failed(self, record: RequestRecord, request: Request, err: Exception) -> Answer:
        """The answer to a prediction that failed (the one place its errors become HTTP statuses)."""
        if isinstance(err, FerrymanError):
            record.code = err.status
            if isinstance(err, PayloadTooLarge | InvalidInput | RequestTimeout):
                log.debug("rejected %s %s: %s", request.method, request.path, err)
            elif err.status >= 500:
                log.warning("failed %s %s: %s", request.method, request.path, err)
            return error_answer(err)
        record.code = 500
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=err)
        return 500, list(_JSON_HEADERS), b'{"error":"internal error"}'

    # -- direct dispatch (ferryman_runtimes.asgi.direct) --------------------------------------------
    def direct_target(self, method: str, path: str) -> bool:
        """Whether a request can be answered straight from the HTTP protocol (:meth:`direct_start`, then
        :meth:`direct_finish`), without an ASGI task: a prediction computed in this process."""
        return not self.async_compute and method == "POST" and is_prediction_path(path)

    def direct_start(self, request: Request) -> Plan | Answer:
        """:meth:`start` for a request the protocol answers itself: its plan, or the answer that refuses
        it."""
        try:
            return self.start(request, request.path.split("/"))
        except FerrymanError as err:
            return error_answer(err)

    def direct_finish(
        self, plan: Plan, request: Request, body: bytes, *, t0: float, failure: FerrymanError | None = None
    ) -> Answered:
        """:meth:`answer` for a request the protocol answers itself (``failure``: it cut the body off)."""
        return self.answer(plan, request, body, t0=t0, failure=failure)


def _computed(record: RequestRecord, infer: InferRequest, c0: float) -> None:
    """Record the compute time since ``c0`` and the request's rows."""
    record.compute_seconds = perf_counter() - c0
    shape = infer.inputs[0].shape
    record.rows = shape[0] if shape else 1


def freeze_heap() -> None:
    """Move everything allocated so far (modules, models, metrics) out of the garbage collector's view.

    A serving process allocates its long-lived objects before the first request; left in the oldest
    generation, every full collection would traverse them all again (tens of milliseconds with the
    metrics and ONNX bindings loaded), and a request that triggers one waits for it.
    """
    gc.collect()
    gc.freeze()


def _model_path(parts: list[str]) -> tuple[str, str | None, list[str]]:
    """Split ``/vN/models/{m}[/versions/{v}]/rest...`` into (model, version, rest)."""
    name = parts[3]
    if not name:
        raise ModelNotFound("model name is empty")
    rest = parts[4:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
        if not version:
            raise ModelNotFound("version is empty")
    return name, version, rest


def _binary_outputs(infer: InferRequest, response: InferResponse) -> set[str] | None:
    if infer.outputs:
        names = {o.name for o in infer.outputs if o.binary}
        return names or None
    if infer.binary_output:
        return {t.name for t in response.outputs}
    return None


def json_dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
