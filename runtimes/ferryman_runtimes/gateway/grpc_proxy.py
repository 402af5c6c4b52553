"""`ferryman gateway --grpc-port`: the cluster gateway's gRPC door (``inference.GRPCInferenceService``).

Each call is routed by the same pure :func:`ferryman.routing.decide` and the same route table as the
gateway's REST door (:class:`~ferryman_runtimes.gateway.proxy.ProxyGateway`): the weights, a sticky A/B
key read from the call's metadata (``source: header``; ``cookie`` from a ``cookie`` entry; ``field`` from
the request's parameters or a named input), pins by the request's ``model_version`` or the pin header sent
as metadata, and shadow copies. The chosen version's gRPC address comes from ``grpcBackends`` in
routes.json; the message is forwarded as bytes, unchanged (typed or raw contents), with the caller's API
key and request id, and the version server's answer (or its status code and message) comes back as is.
Requests and their codes are recorded like REST's (``protocol="grpc"`` / ``"grpc-raw"``, codes in HTTP
form so the analysis reads one series), shadow copies as ``protocol="shadow"``.

The server side is the native transport's (:mod:`ferryman_runtimes.grpc.native`, handlers run as tasks with a
:class:`~ferryman_runtimes.grpc.context.CallContext`) unless ``--grpc-transport grpcio`` (``grpc.aio``); the
forwards to the version servers go through ``grpc.aio`` channels either way.

``ServerLive`` and ``ServerReady`` are the gateway's own (ready once a route table is loaded); the other
RPCs are answered by a version server: ``ModelReady`` and ``ModelMetadata`` by the version the policy picks
(as REST's ``GET /v2/models/...``), ``ServerMetadata`` by the stable version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ferryman.errors import FerrymanError, InvalidInput, ModelNotFound, NotReady
from ferryman.routing import ROUTE_SHADOW, RouteDecision, RouteTable, RoutingInputs, decide
from ferryman.spec import StickySource
from ferryman.telemetry import RequestRecord
from ferryman_runtimes.grpc import codec
from ferryman_runtimes.grpc import inference_pb2 as pb
from ferryman_runtimes.grpc.context import AsyncService
from ferryman_runtimes.grpc.native import NativeServer
from ferryman_runtimes.grpc.server import SERVICE, listen, transport_choice
from ferryman_runtimes.grpc.status import for_error, http_status

if TYPE_CHECKING:
    from ferryman_runtimes.gateway.proxy import ProxyGateway

log = logging.getLogger("ferryman.gateway.grpc")

FORWARDED = ("authorization", "x-api-key", "x-request-id")  # the REST door forwards the same headers
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
Metadata = tuple[tuple[str, str | bytes], ...]


def _identity(body: bytes) -> bytes:
    return body


class _Failed(Exception):
    """A version server's error answer, passed to the caller unchanged."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class GrpcProxy:
    """The six v2 RPCs over ``gateway``'s route table, forwarded to the versions' gRPC ports."""

    def __init__(self, gateway: ProxyGateway) -> None:
        self.gateway = gateway
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._shadow: set[asyncio.Task[None]] = set()

    def methods(self) -> dict[str, Callable[[bytes, Any], Awaitable[bytes]]]:
        return {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self._model_call("ModelReady", pb.ModelReadyRequest),
            "ModelMetadata": self._model_call("ModelMetadata", pb.ModelMetadataRequest),
            "ServerMetadata": self.server_metadata,
            "ModelInfer": self.model_infer,
        }

    def handler(self) -> grpc.GenericRpcHandler:
        """The RPCs for a ``grpc.aio`` server."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {name: grpc.unary_unary_rpc_method_handler(_guarded(fn)) for name, fn in self.methods().items()},
        )

    def native_service(self) -> AsyncService:
        """The RPCs for the native transport (:mod:`ferryman_runtimes.grpc.native`)."""
        return AsyncService(self.methods(), failure=_failure)

    async def close(self) -> None:
        if self._shadow:
            await asyncio.wait(list(self._shadow), timeout=5)
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    # -- the gateway's own answers -------------------------------------------------------------------------
    async def server_live(self, body: bytes, context: Any) -> bytes:
        codec.parse(pb.ServerLiveRequest, body, what="ServerLiveRequest")
        return pb.ServerLiveResponse(live=True).SerializeToString()  # type: ignore[no-any-return]

    async def server_ready(self, body: bytes, context: Any) -> bytes:
        codec.parse(pb.ServerReadyRequest, body, what="ServerReadyRequest")
        ready = self.gateway.table is not None
        return pb.ServerReadyResponse(ready=ready).SerializeToString()  # type: ignore[no-any-return]

    # -- forwarded -------------------------------------------------------------------------------------------
    async def server_metadata(self, body: bytes, context: Any) -> bytes:
        codec.parse(pb.ServerMetadataRequest, body, what="ServerMetadataRequest")
        return await self._send(self._table().stable, "ServerMetadata", body, **_call(context))

    def _model_call(self, method: str, message: Any) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def call(body: bytes, context: Any) -> bytes:
            request = codec.parse(message, body, what=message.DESCRIPTOR.name)
            table = self._table()
            self._check_model(table, request.name, field="name")
            decision = self._decide(table, version=request.version or None, metadata=_metadata(context))
            return await self._send(decision.version, method, body, **_call(context))

        return call

    async def model_infer(self, body: bytes, context: Any) -> bytes:
        t0 = time.perf_counter()
        table = self._table()
        request = codec.parse(pb.ModelInferRequest, body, what="ModelInferRequest")
        protocol = "grpc-raw" if codec.uses_raw(request) else "grpc"
        self._check_model(table, request.model_name, field="model_name")
        decision = self._decide(
            table, version=request.model_version or None, metadata=_metadata(context), request=request
        )
        code = 502
        forwarded = _forwarded(context)
        try:
            answer = await self._send(
                decision.version, "ModelInfer", body, metadata=forwarded, remaining=context.time_remaining()
            )
            code = 200
        except _Failed as failed:
            code = http_status(failed.code)
            raise
        except FerrymanError as err:
            code = err.status
            raise
        except asyncio.CancelledError:  # gRPC cancels the handler: the deadline passed, or the caller left
            remaining = context.time_remaining()
            code = 408 if remaining is not None and remaining <= 0 else 499
            raise
        finally:
            self._record(table, decision.version, decision.route, protocol, code, time.perf_counter() - t0)
        if decision.shadow is not None:
            task = asyncio.get_running_loop().create_task(
                self._shadow_copy(table, decision.shadow, body, forwarded)
            )
            self._shadow.add(task)
            task.add_done_callback(self._shadow.discard)
        return answer

    # -- routing ---------------------------------------------------------------------------------------------
    def _table(self) -> RouteTable:
        table = self.gateway.table
        if table is None:
            raise NotReady("no routes loaded yet")
        return table

    @staticmethod
    def _check_model(table: RouteTable, name: str, *, field: str) -> None:
        if not name:
            raise InvalidInput(f"{field}: must be set (the model's name)")
        if name != table.model:
            raise ModelNotFound(f"model {name!r} not found (this gateway serves {table.model!r})")

    def _decide(
        self, table: RouteTable, *, version: str | None, metadata: dict[str, str], request: Any = None
    ) -> RouteDecision:
        return decide(
            table,
            routing_inputs(table, version=version, metadata=metadata, request=request),
            draw=random.random(),
            shadow_draw=random.random() if table.shadow else 1.0,
        )

    # -- forwarding ------------------------------------------------------------------------------------------
    def _channel(self, version: str) -> grpc.aio.Channel:
        target = self.gateway.grpc_backends.get(version)
        if target is None:
            raise NotReady(f"version {version!r} has no gRPC backend (grpcBackends in the routes file)")
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            self._forget_stale()
        return channel

    def _forget_stale(self) -> None:
        """Close channels to addresses the routes file no longer names (a removed version)."""
        wanted = set(self.gateway.grpc_backends.values())
        for target in [t for t in self._channels if t not in wanted]:
            channel = self._channels.pop(target)
            asyncio.get_running_loop().create_task(channel.close(grace=5.0))

    async def _send(
        self, version: str, method: str, body: bytes, *, metadata: Metadata, remaining: float | None
    ) -> bytes:
        """``body`` sent to ``version``'s ``method``, within the caller's deadline (``remaining`` seconds)."""
        call = self._channel(version).unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_identity, response_deserializer=_identity
        )
        timeout = self.gateway.timeout
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        try:
            try:
                return await call(body, metadata=metadata, timeout=timeout)  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                # No connection (a pod stopping, an endpoint gone): a prediction has no side effects, so it
                # is sent once more (the channel reconnects; the Service picks a ready pod).
                log.debug("retrying %s on version %s after UNAVAILABLE", method, version)
                return await call(body, metadata=metadata, timeout=timeout)  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise _Failed(err.code(), f"version {version!r} is unavailable ({err.details()})") from err
            raise _Failed(err.code(), err.details() or "") from err

    async def _shadow_copy(self, table: RouteTable, version: str, body: bytes, metadata: Metadata) -> None:
        """A copy of an answered call (no deadline: the caller has its answer; the gateway's timeout
        holds)."""
        t0 = time.perf_counter()
        code = 502
        try:
            await self._send(version, "ModelInfer", body, metadata=metadata, remaining=None)
            code = 200
        except _Failed as failed:
            code = http_status(failed.code)
        except Exception as err:  # a broken candidate must never hurt anyone
            code = err.status if isinstance(err, FerrymanError) else 500
        self._record(table, version, ROUTE_SHADOW, "shadow", code, time.perf_counter() - t0)

    def _record(
        self, table: RouteTable, version: str, route: str, protocol: str, code: int, seconds: float
    ) -> None:
        observer = self.gateway.observer
        if observer is not None:
            observer.finished(
                RequestRecord(
                    model=table.model,
                    version=version,
                    route=route,
                    protocol=protocol,
                    code=code,
                    seconds=seconds,
                ),
                None,
                None,
            )


def _failure(err: Exception) -> tuple[grpc.StatusCode, str]:
    """A handler's failure as its status: a version server's passed through, a domain error mapped."""
    if isinstance(err, _Failed):
        return err.code, err.details
    if isinstance(err, FerrymanError):
        return for_error(err)
    raise TypeError(f"not a domain failure: {err!r}")


def _guarded(fn: Callable[[bytes, Any], Awaitable[bytes]]) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """``fn`` with domain errors as their status and a version server's error passed through."""

    async def call(body: bytes, context: Any) -> bytes:
        try:
            return await fn(body, context)
        except _Failed as failed:
            code, message = failed.code, failed.details
        except FerrymanError as err:
            code, message = for_error(err)
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    return call


def _metadata(context: Any) -> dict[str, str]:
    """The call's text metadata, lower-case names (``-bin`` entries are not routing input)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        name = key.lower()
        if not name.endswith("-bin") and isinstance(value, str):
            out[name] = value
    return out


def _forwarded(context: Any) -> Metadata:
    """The metadata a version server gets: the caller's API key and request id."""
    return tuple((k.lower(), v) for k, v in context.invocation_metadata() or () if k.lower() in FORWARDED)


def _call(context: Any) -> dict[str, Any]:
    return {"metadata": _forwarded(context), "remaining": context.time_remaining()}


def routing_inputs(
    table: RouteTable, *, version: str | None, metadata: dict[str, str], request: Any = None
) -> RoutingInputs:
    """What :func:`decide` reads, from a call: its ``model_version``, the pin and sticky metadata entries,
    the sticky cookie (a ``cookie`` entry) or the sticky field (a parameter, or the first element of a
    named input). Pure."""
    headers = {k: v for k, v in metadata.items() if k == table.pin_header}
    cookies: dict[str, str] = {}
    fields: dict[str, object] = {}
    sticky = table.sticky
    if sticky is not None and sticky.source == StickySource.header and sticky.name.lower() in metadata:
        headers[sticky.name.lower()] = metadata[sticky.name.lower()]
    elif sticky is not None and sticky.source == StickySource.cookie and "cookie" in metadata:
        cookie = _cookie(metadata["cookie"], sticky.name)
        if cookie is not None:
            cookies[sticky.name] = cookie
    elif sticky is not None and sticky.source == StickySource.field and request is not None:
        value = _field(request, sticky.name)
        if value is not None:
            fields[sticky.name] = value
    return RoutingInputs(path_version=version, headers=headers, cookies=cookies, fields=fields)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _field(request: Any, name: str) -> object | None:
    """The sticky key in a ModelInferRequest: ``parameters[name]``, else the first element of input
    ``name``."""
    if name in request.parameters:
        return codec.parameters({name: request.parameters[name]}).get(name)
    for i, item in enumerate(request.inputs):
        if item.name != name:
            continue
        with contextlib.suppress(InvalidInput, ValueError, TypeError):
            if request.raw_input_contents:
                if i < len(request.raw_input_contents):
                    arr = codec.raw_array(
                        request.raw_input_contents[i],
                        datatype=item.datatype,
                        shape=list(item.shape),
                        where=name,
                    )
                    return _scalar(arr.flat[0]) if arr.size else None
                return None
            field = codec.CONTENTS_FIELD.get(item.datatype)
            values: Any = getattr(item.contents, field) if field else []
            return _scalar(values[0]) if len(values) else None
    return None


def _scalar(value: Any) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value


async def start(proxy: GrpcProxy, *, host: str, port: int, max_message_bytes: int) -> Any:
    """A started server on the running loop serving ``proxy`` on the chosen transport (``--grpc-transport``:
    native by default, or ``grpc.aio``); raises FerrymanError if the port is taken. Returns the server (its
    ``stop(grace)`` drains it) and the port it bound."""
    transport = transport_choice()
    if transport == "native":
        native = NativeServer(proxy.native_service(), max_message=max_message_bytes)
        bound = await native.listen(host=host, port=port)
        log.info("gRPC (inference.GRPCInferenceService, native transport) on %s:%s", host, bound)
        return native, bound
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((proxy.handler(),))
    bound = await listen(server, host=host, port=port)
    log.info("gRPC (inference.GRPCInferenceService) on %s:%s", host, bound)
    return server, bound
