"""``inference.GRPCInferenceService`` on a ``grpc.aio`` server sharing the REST server's event loop and app.

The servicer is an adapter over the same :class:`~ferryman_runtimes.asgi.app.InferenceApp` (or gateway)
the REST listener serves: a ``ModelInfer`` is admitted with ``app.admit`` (readiness, unknown model or
version, the in-flight limit) and answered by ``app.answer`` (decode, route, infer or batch, encode,
record), with a protobuf decoder and encoder in place of JSON's. So the routing policy (weights, sticky A/B
key, pins by ``model_version`` or the pin header sent as metadata, shadow), adaptive batching, metrics
(``protocol="grpc"`` / ``"grpc-raw"``), accounting, drift sampling and the rollout analysis are the REST
path's, unchanged. Messages are handled as bytes (no deserializer in gRPC), so a malformed one is
``INVALID_ARGUMENT``, never gRPC's ``INTERNAL`` for a failed deserialization; ``status`` maps every
domain error. API keys: the REST listener's key source (``authorization: Bearer <key>`` or ``x-api-key``
metadata); ``ServerLive`` and ``ServerReady`` stay open like ``/v2/health/*``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import grpc

from ferryman.errors import FerrymanError, InvalidInput, Unauthorized
from ferryman_runtimes.asgi.app import InferenceApp, Plan
from ferryman_runtimes.asgi.http import Request
from ferryman_runtimes.asgi.security import ApiKeys, supplied_key
from ferryman_runtimes.grpc import codec
from ferryman_runtimes.grpc import inference_pb2 as pb
from ferryman_runtimes.grpc.status import for_answer, for_error

log = logging.getLogger("ferryman.grpc")

SERVICE = "inference.GRPCInferenceService"
DEFAULT_PORT = 8081  # KServe's and Triton's conventional gRPC port next to HTTP 8080 (Triton: 8001)
PLATFORM = "onnxruntime_onnx"

Handler = Callable[[bytes, Any], Awaitable[bytes]]


def _metadata(context: Any) -> list[tuple[bytes, bytes]]:
    """The call's metadata as the REST path's header list (lower-case names; ``-bin`` values as sent)."""
    out = []
    for key, value in context.invocation_metadata() or ():
        raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
        out.append((key.lower().encode("latin-1", "replace"), raw))
    return out


class InferenceServicer:
    """The six v2 RPCs over ``app``; ``keys``: the API keys every RPC but ServerLive/ServerReady needs."""

    def __init__(self, app: InferenceApp, *, keys: ApiKeys | None = None) -> None:
        if app.async_compute:
            raise FerrymanError("gRPC serves versions computed in this process (not the Ray ingress)")
        self.app = app
        self.keys = keys
        self.refused = 0

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, Handler] = {
            "ServerLive": self._guarded(self.server_live, open_=True),
            "ServerReady": self._guarded(self.server_ready, open_=True),
            "ModelReady": self._guarded(self.model_ready),
            "ServerMetadata": self._guarded(self.server_metadata),
            "ModelMetadata": self._guarded(self.model_metadata),
            "ModelInfer": self._guarded(self.model_infer),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
        )

    def _guarded(
        self, fn: Callable[[bytes, list[tuple[bytes, bytes]]], Awaitable[bytes]], *, open_: bool = False
    ) -> Handler:
        """``fn`` behind the API-key check, with every domain error turned into its status."""

        async def call(body: bytes, context: Any) -> bytes:
            metadata = _metadata(context)
            try:
                if not open_ and self.keys is not None and not self.keys.accepts(supplied_key(metadata)):
                    self.refused += 1
                    raise Unauthorized(
                        "missing or invalid API key (send metadata authorization: Bearer <key> "
                        "or x-api-key: <key>)"
                    )
                return await fn(body, metadata)
            except _Answered as answered:
                code, message = for_answer(answered.status, answered.headers, answered.payload)
            except FerrymanError as err:
                code, message = for_error(err)
            await context.abort(code, message)
            raise AssertionError("unreachable: abort raises")

        return call

    # -- health and metadata --------------------------------------------------------------------------
    async def server_live(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        codec.parse(pb.ServerLiveRequest, body, what="ServerLiveRequest")
        return pb.ServerLiveResponse(live=True).SerializeToString()  # type: ignore[no-any-return]

    async def server_ready(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        codec.parse(pb.ServerReadyRequest, body, what="ServerReadyRequest")
        return pb.ServerReadyResponse(ready=self.app.repository.ready).SerializeToString()  # type: ignore[no-any-return]

    async def model_ready(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        request = codec.parse(pb.ModelReadyRequest, body, what="ModelReadyRequest")
        self._model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.app.repository.ready).SerializeToString()  # type: ignore[no-any-return]

    async def server_metadata(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        codec.parse(pb.ServerMetadataRequest, body, what="ServerMetadataRequest")
        doc = self.app.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=doc["name"],
            version=doc["version"],  # type: ignore[no-any-return]
            extensions=doc["extensions"],
        ).SerializeToString()

    async def model_metadata(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        request = codec.parse(pb.ModelMetadataRequest, body, what="ModelMetadataRequest")
        doc = self.app.dataplane.model_metadata(self._model(request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(  # type: ignore[no-any-return]
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]],
        ).SerializeToString()

    def _model(self, name: str, version: str) -> Any:
        if not name:
            raise InvalidInput("name: must be set (the model's name)")
        return self.app.repository.get(name, version or None)

    # -- inference ------------------------------------------------------------------------------------
    async def model_infer(self, body: bytes, metadata: list[tuple[bytes, bytes]]) -> bytes:
        t0 = perf_counter()
        message = codec.parse(pb.ModelInferRequest, body, what="ModelInferRequest")
        name = message.model_name
        if not name:
            raise InvalidInput("model_name: must be set")
        version = message.model_version or None
        raw = codec.uses_raw(message)
        max_elements = self.app.limits.max_elements

        def decode(_: bytes) -> Any:
            return codec.decode_request(message, max_elements=max_elements)

        def encode(response: Any, infer: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
            return codec.encode_response(response, raw=raw), []

        plan = self.app.admit(Plan(name, version, "grpc-raw" if raw else "grpc", decode, encode))
        path = f"/v2/models/{name}/versions/{version}/infer" if version else f"/v2/models/{name}/infer"
        request = Request({"type": "grpc", "method": "gRPC ModelInfer", "path": path, "headers": metadata})
        answered = self.app.answer(plan, request, b"", t0=t0)
        if not isinstance(answered, tuple):  # a batched version: answered when its batch has run
            # shielded: a call cancelled meanwhile (deadline, client gone) leaves the batch and its record intact
            answered = await asyncio.shield(answered)
        status, headers, payload = answered
        if status != 200:
            raise _Answered(status, headers, payload)
        return payload


class _Answered(Exception):
    """A prediction the shared path answered with an error (its HTTP form, mapped by ``status``)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.payload = payload


@dataclass
class GrpcListener:
    """A started gRPC server and the port it bound (``port=0`` asks for a free one)."""

    server: Any
    port: int
    servicer: InferenceServicer

    async def stop(self, grace: float | None = 5.0) -> None:
        await self.server.stop(grace)


def server_options(app: InferenceApp, *, reuse_port: bool = False) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", app.limits.max_body_bytes),  # over: RESOURCE_EXHAUSTED from gRPC
        ("grpc.max_send_message_length", -1),
        # one process owns the port (a second server fails to bind) unless workers share it on purpose
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


async def start_grpc(
    app: InferenceApp,
    *,
    host: str,
    port: int,
    api_keys: str | Path | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    reuse_port: bool = False,
) -> GrpcListener:
    """Serve ``app`` over gRPC on the running event loop; raises :class:`FerrymanError` if the port is taken."""
    keys = ApiKeys(api_keys) if api_keys is not None else None
    servicer = InferenceServicer(app, keys=keys)
    server = grpc.aio.server(options=server_options(app, reuse_port=reuse_port))
    server.add_generic_rpc_handlers((servicer.handler(),))
    credentials = None
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise FerrymanError("TLS needs both --tls-cert and --tls-key")
        from ferryman_runtimes.grpc.tls import server_credentials

        credentials = server_credentials(cert=tls_cert, key=tls_key)
    bound = await listen(server, host=host, port=port, credentials=credentials)
    log.info(
        "gRPC (inference.GRPCInferenceService) on %s%s", f"{host}:{bound}", " with TLS" if tls_cert else ""
    )
    return GrpcListener(server, bound, servicer)


async def listen(server: Any, *, host: str, port: int, credentials: Any = None) -> int:
    """Bind ``server`` (a ``grpc.aio`` server) to host:port, with TLS when ``credentials`` are given, and
    start it; the port it bound. A port it cannot take is a FerrymanError naming the address."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise FerrymanError(f"gRPC cannot listen on {address}: {err}") from err
    if not bound:
        raise FerrymanError(f"gRPC cannot listen on {address} (in use?)")
    await server.start()
    return int(bound)
