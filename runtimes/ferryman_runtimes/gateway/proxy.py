"""`ferryman gateway`: the cluster gateway — the routing policy in front of per-version servers, no mesh.

The operator writes the route table to ``routes.json`` (a ConfigMap mounted read-only, see
:mod:`ferryman.routes`) and rewrites it at every rollout step. This gateway re-reads the file when its
content changes and swaps the table in one assignment; each request is routed by the same pure
:func:`ferryman.routing.decide` as ``ferryman up`` and forwarded unchanged (v1, v2 JSON or binary) to
the chosen version's backend URL over keep-alive connections. Shadow copies go out after the caller has
its answer and never fail the caller. With ``--grpc-port`` the same table routes gRPC too
(:mod:`ferryman_runtimes.gateway.grpc_proxy`), forwarded to the versions' ``grpcBackends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from ferryman import metrics
from ferryman.errors import FerrymanError, ModelNotFound, NotReady
from ferryman.metrics_exposition import routes as metrics_routes
from ferryman.request_metrics import PrometheusObserver
from ferryman.routes import backends_from_dict, grpc_backends_from_dict, table_from_dict
from ferryman.routing import ROUTE_SHADOW, RouteTable, RoutingInputs, decide
from ferryman.spec import Limits, StickySource
from ferryman.telemetry import RequestRecord
from ferryman_runtimes.asgi.http import Request, read_body, send_bytes, send_json

log = logging.getLogger("ferryman.gateway.proxy")

_FORWARDED = (
    b"content-type",
    b"inference-header-content-length",
    b"authorization",
    b"x-api-key",
    b"x-request-id",
)
_RETURNED = (
    "content-type",
    "inference-header-content-length",
    "allow",
    "retry-after",
)  # a 405 says what is allowed
# failures that leave no answer behind (a timeout is not one: the request may still be running)
_BROKEN = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class ProxyGateway:
    def __init__(
        self,
        routes_path: Path,
        *,
        limits: Limits | None = None,
        reload_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        telemetry: bool = True,
        grpc_address: tuple[str, int] | None = None,
    ) -> None:
        self.routes_path = routes_path
        self.limits = limits or Limits()
        self.reload_seconds = reload_seconds
        self.timeout = timeout_seconds
        self.table: RouteTable | None = None
        self.backends: dict[str, str] = {}
        self.grpc_backends: dict[str, str] = {}
        self.grpc_address = grpc_address  # (host, port): serve gRPC too, started with the app
        self.grpc_port: int | None = None  # the port it bound
        self._grpc: Any = None  # (server, GrpcProxy) while serving
        self._digest = ""
        self._client: httpx.AsyncClient | None = None
        self._watch: asyncio.Task[None] | None = None
        self._shadow: set[asyncio.Task[None]] = set()
        self.observer = PrometheusObserver() if telemetry else None
        self.metric_routes = metrics_routes() if telemetry else {}
        self.reload()

    # -- routes file ----------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Load routes.json if its content changed; a broken file keeps the previous table (and is logged)."""
        try:
            raw = self.routes_path.read_bytes()
        except OSError as err:
            if self.table is None:
                log.warning("routes file %s not readable yet: %s", self.routes_path, err.strerror)
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return False
        try:
            doc = orjson.loads(raw)
            table = table_from_dict(doc, source=str(self.routes_path))
            backends = backends_from_dict(doc)
            grpc_backends = grpc_backends_from_dict(doc)
        except (orjson.JSONDecodeError, FerrymanError) as err:
            log.error(
                "ignoring invalid routes file %s (keeping the previous table): %s", self.routes_path, err
            )
            self._digest = digest
            return False
        missing = [v for v, w in table.weights if w > 0 and v not in backends]
        if missing:
            log.error("ignoring routes file %s: no backend URL for %s", self.routes_path, missing)
            self._digest = digest
            return False
        if self.grpc_address is not None:
            unreachable = [v for v, w in table.weights if w > 0 and v not in grpc_backends]
            if unreachable:  # served over REST; gRPC calls routed there fail with UNAVAILABLE, saying why
                log.warning(
                    "routes file %s: no gRPC address (grpcBackends) for %s", self.routes_path, unreachable
                )
        self.grpc_backends = grpc_backends
        self.table, self.backends, self._digest = (
            table,
            backends,
            digest,
        )  # one swap per field; table last read
        log.info("routes: %s", ", ".join(f"{v} {w}%" for v, w in table.weights))
        if self.observer is not None:
            metrics.set_traffic_weights(table.model, dict(table.weights))
        return True

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reload_seconds)
            self.reload()

    # -- ASGI -------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._client = httpx.AsyncClient(
                        timeout=self.timeout,
                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                    )
                    self._watch = asyncio.get_running_loop().create_task(self._watch_loop())
                    try:
                        await self._start_grpc()
                    except FerrymanError as err:
                        await send({"type": "lifespan.startup.failed", "message": str(err)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._watch is not None:
                        self._watch.cancel()
                    await self._stop_grpc()
                    if self._shadow:
                        await asyncio.wait(list(self._shadow), timeout=5)
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope)
        try:
            await self.handle(request, receive, send)
        except FerrymanError as err:
            await send_json(send, err.status, {"error": str(err)})

    async def _start_grpc(self) -> None:
        if self.grpc_address is None:
            return
        from ferryman_runtimes.gateway import grpc_proxy

        proxy = grpc_proxy.GrpcProxy(self)
        host, port = self.grpc_address
        server, self.grpc_port = await grpc_proxy.start(
            proxy, host=host, port=port, max_message_bytes=self.limits.max_body_bytes
        )
        self._grpc = (server, proxy)

    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            server, proxy = self._grpc
            self._grpc = None
            await server.stop(5.0)
            await proxy.close()

    async def handle(self, request: Request, receive: Any, send: Any) -> None:
        path = request.path
        if request.method == "GET":
            if path in ("/healthz", "/v2/health/live"):
                return await send_json(send, 200, {"live": True})
            if path in ("/readyz", "/v2/health/ready"):
                ready = self.table is not None
                return await send_json(send, 200 if ready else 503, {"ready": ready})
            handler = self.metric_routes.get(("GET", path))
            if handler is not None:
                return await handler(request, receive, send)
        parts = path.split("/")
        if len(parts) < 4 or parts[2] != "models" or parts[1] not in ("v1", "v2"):
            return await send_json(send, 404, {"error": f"no route for {request.method} {path}"})
        table = self.table
        if table is None:
            raise NotReady("no routes loaded yet")
        return await self.forward(request, receive, send, table, parts)

    async def forward(
        self, request: Request, receive: Any, send: Any, table: RouteTable, parts: list[str]
    ) -> None:
        t0 = time.perf_counter()
        last = parts[-1]
        protocol = (
            "v1"
            if parts[1] == "v1"
            else ("v2-binary" if request.header(b"inference-header-content-length") else "v2")
        )
        name = parts[3].split(":", 1)[0]
        if name != table.model:
            raise ModelNotFound(f"model {name!r} not found (this gateway serves {table.model!r})")
        version = parts[5].split(":", 1)[0] if len(parts) >= 6 and parts[4] == "versions" else None
        body = (
            await read_body(request, receive, limit=self.limits.max_body_bytes)
            if request.method == "POST"
            else b""
        )
        inputs = _routing_inputs(request, table, version, body)
        decision = decide(
            table, inputs, draw=random.random(), shadow_draw=random.random() if table.shadow else 1.0
        )
        is_infer = request.method == "POST" and (last == "infer" or last.endswith(":predict"))
        code = 502
        try:
            code, headers, content = await self._send(decision.version, request, body)
            await send_bytes(send, code, content, headers)
        finally:
            if self.observer is not None and is_infer:
                self.observer.finished(
                    RequestRecord(
                        model=table.model,
                        version=decision.version,
                        route=decision.route,
                        protocol=protocol,
                        code=code,
                        seconds=time.perf_counter() - t0,
                    ),
                    None,
                    None,
                )
        if decision.shadow is not None and is_infer:
            task = asyncio.get_running_loop().create_task(self._shadow_copy(decision.shadow, request, body))
            self._shadow.add(task)
            task.add_done_callback(self._shadow.discard)

    async def _send(
        self, version: str, request: Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        base = self.backends.get(version)
        if base is None or self._client is None:
            raise NotReady(f"version {version!r} has no backend yet")
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() in _FORWARDED]
        url = base.rstrip("/") + request.path + (("?" + request.query.decode()) if request.query else "")
        try:
            try:
                resp = await self._client.request(request.method, url, content=body or None, headers=headers)
            except _BROKEN as err:
                # The connection broke before an answer: a pooled keep-alive connection the version server
                # closed (a pod stopping, an idle timeout) or an endpoint that went away. A prediction has no
                # side effects, so it is sent once more, on a fresh connection (the Service picks a ready
                # pod).
                log.debug("retrying %s on a new connection after %s", url, type(err).__name__)
                resp = await self._client.request(request.method, url, content=body or None, headers=headers)
        except httpx.HTTPError as err:
            raise NotReady(f"version {version!r} is unavailable ({type(err).__name__})") from err
        out = [(k.encode(), resp.headers[k].encode()) for k in _RETURNED if k in resp.headers]
        return resp.status_code, out, resp.content

    async def _shadow_copy(self, version: str, request: Request, body: bytes) -> None:
        t0 = time.perf_counter()
        code = 502
        with contextlib.suppress(FerrymanError, Exception):
            code, _, _ = await self._send(version, request, body)
        if self.observer is not None and self.table is not None:
            self.observer.finished(
                RequestRecord(
                    model=self.table.model,
                    version=version,
                    route=ROUTE_SHADOW,
                    protocol="shadow",
                    code=code,
                    seconds=time.perf_counter() - t0,
                ),
                None,
                None,
            )


def _routing_inputs(request: Request, table: RouteTable, version: str | None, body: bytes) -> RoutingInputs:
    headers: dict[str, str] = {}
    wanted = {table.pin_header.encode()}
    sticky = table.sticky
    if sticky is not None and sticky.source == StickySource.header:
        wanted.add(sticky.name.lower().encode())
    for k, v in request.scope["headers"]:
        if k.lower() in wanted:
            headers[k.lower().decode()] = v.decode("latin-1")
    cookies: dict[str, str] = {}
    fields: dict[str, object] = {}
    if sticky is not None and sticky.source == StickySource.cookie:
        value = request.cookie(sticky.name)
        if value is not None:
            cookies[sticky.name] = value
    elif sticky is not None and sticky.source == StickySource.field and body:
        fields = _sticky_field(body, request, sticky.name)
    return RoutingInputs(path_version=version, headers=headers, cookies=cookies, fields=fields)


def _sticky_field(body: bytes, request: Request, name: str) -> dict[str, object]:
    header_length = request.header(b"inference-header-content-length")
    try:
        doc = orjson.loads(body[: int(header_length)] if header_length else body)
    except (orjson.JSONDecodeError, ValueError):
        return {}  # the backend will answer the malformed body with its own 400
    if not isinstance(doc, dict):
        return {}
    params = doc.get("parameters")
    if isinstance(params, dict) and name in params:
        return {name: params[name]}
    for item in doc.get("inputs") or []:
        if (
            isinstance(item, dict)
            and item.get("name") == name
            and isinstance(item.get("data"), list)
            and item["data"]
        ):
            return {name: item["data"][0]}
    return {}


def run(
    routes: str,
    *,
    host: str = "0.0.0.0",
    port: int = 8080,
    telemetry: bool = True,
    grpc_port: int | None = None,
) -> None:
    import uvicorn

    from ferryman_runtimes.native.server import uvicorn_options

    app = ProxyGateway(
        Path(routes), telemetry=telemetry, grpc_address=(host, grpc_port) if grpc_port is not None else None
    )
    opts = uvicorn_options(host=host, port=port)
    uvicorn.run(app, **opts)
