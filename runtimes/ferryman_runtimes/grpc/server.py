"""The gRPC listener of ``ferryman serve``/``up`` and the KServe-contract runtime, on one of two transports.

``native`` (the default, :mod:`ferryman_runtimes.grpc.native`): our asyncio HTTP/2 server specialised for
unary gRPC, which answers a call from the code that read it. ``grpcio``: a ``grpc.aio`` server, the
reference implementation. Both call the same :class:`~ferryman_runtimes.grpc.service.InferenceService` on
the REST server's event loop, so their semantics are the same; the choice is ``--grpc-transport`` (the
environment variable ``FERRYMAN_GRPC_TRANSPORT``, so worker processes inherit it). docs/benchmarks.md
measures both."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ferryman.errors import FerrymanError
from ferryman_runtimes.asgi.app import InferenceApp
from ferryman_runtimes.asgi.security import ApiKeys
from ferryman_runtimes.grpc.service import SERVICE, Answered, InferenceService, failure

log = logging.getLogger("ferryman.grpc")

DEFAULT_PORT = 8081  # KServe's and Triton's conventional gRPC port next to HTTP 8080 (Triton: 8001)
TRANSPORT_ENV = "FERRYMAN_GRPC_TRANSPORT"
TRANSPORTS = ("native", "grpcio")
DEFAULT_TRANSPORT = "native"

Handler = Callable[[bytes, Any], Awaitable[bytes]]


def transport_choice(transport: str | None = None) -> str:
    """``transport``, else the environment's choice, else the default; an unknown name is an error."""
    chosen = transport or os.environ.get(TRANSPORT_ENV) or DEFAULT_TRANSPORT
    if chosen not in TRANSPORTS:
        raise FerrymanError(f"gRPC transport {chosen!r}: choose one of {', '.join(TRANSPORTS)}")
    return chosen


def _metadata(context: Any) -> list[tuple[bytes, bytes]]:
    """The call's metadata as the REST path's header list (lower-case names; ``-bin`` values as sent)."""
    out = []
    for key, value in context.invocation_metadata() or ():
        raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
        out.append((key.lower().encode("latin-1", "replace"), raw))
    return out


def generic_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The service's RPCs as ``grpc.aio`` handlers (bytes in, bytes out: no deserializer in gRPC)."""

    def method(name: str) -> Handler:
        async def call(body: bytes, context: Any) -> bytes:
            try:
                outcome = service.invoke(name, body, _metadata(context))
                if isinstance(outcome, bytes):
                    return outcome
                # a call cancelled meanwhile (deadline, client gone) stops waiting; the batch is untouched
                return service.finish(await outcome)
            except (Answered, FerrymanError) as err:
                code, message = failure(err)
            await context.abort(code, message)
            raise AssertionError("unreachable: abort raises")

        return call

    return grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(method(name)) for name in service.methods}
    )


@dataclass
class GrpcListener:
    """A started gRPC server and the port it bound (``port=0`` asks for a free one)."""

    server: Any
    port: int
    service: InferenceService
    transport: str = "grpcio"

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
    transport: str | None = None,
) -> GrpcListener:
    """Serve ``app`` over gRPC on the running event loop; raises :class:`FerrymanError` if the port is
    taken."""
    chosen = transport_choice(transport)
    keys = ApiKeys(api_keys) if api_keys is not None else None
    service = InferenceService(app, keys=keys)
    if (tls_cert is None) != (tls_key is None):
        raise FerrymanError("TLS needs both --tls-cert and --tls-key")
    if chosen == "native":
        from ferryman_runtimes.grpc.native import NativeServer

        native = NativeServer(service, max_message=app.limits.max_body_bytes)
        bound = await native.listen(
            host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, reuse_port=reuse_port
        )
        server: Any = native
    else:
        server = grpc.aio.server(options=server_options(app, reuse_port=reuse_port))
        server.add_generic_rpc_handlers((generic_handler(service),))
        credentials = None
        if tls_cert is not None and tls_key is not None:
            from ferryman_runtimes.grpc.tls import server_credentials

            credentials = server_credentials(cert=tls_cert, key=tls_key)
        bound = await listen(server, host=host, port=port, credentials=credentials)
    log.info(
        "gRPC (%s, %s transport) on %s%s", SERVICE, chosen, f"{host}:{bound}", " with TLS" if tls_cert else ""
    )
    return GrpcListener(server, bound, service, chosen)


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
