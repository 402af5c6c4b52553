"""A fault-injecting HTTP proxy in front of the real apiserver, for the operator's robustness tests.

The operator talks plain HTTP to the proxy on loopback (with its own ServiceAccount token); the proxy
forwards every request over TLS to the apiserver, one upstream connection per request (``Connection:
close``, so watch streams pass through as they are), except the requests a rule matches: those get the
rule's answer, e.g. ``429 Too Many Requests`` with ``Retry-After`` and the Status body the apiserver sends
while its storage is (re)initializing.

    with FaultProxy(cp) as proxy:
        proxy.fail("DELETE", r"/deployments/m-v2$", times=2)
        ... point the operator at proxy.url ...
        assert proxy.injected == [...]
"""

from __future__ import annotations

import asyncio
import base64
import http
import json
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.cluster.controlplane import ControlPlane


@dataclass
class Rule:
    method: str
    pattern: re.Pattern[str]
    times: int
    status: int = 429
    retry_after: str | None = "1"
    message: str = "storage is (re)initializing"
    hits: int = 0


@dataclass
class FaultProxy:
    cp: ControlPlane
    rules: list[Rule] = field(default_factory=list)
    injected: list[tuple[str, str, int]] = field(default_factory=list)
    forwarded: int = 0

    def __post_init__(self) -> None:
        server = urlsplit(self.cp.server)
        self._upstream = (server.hostname or "127.0.0.1", server.port or 443)
        cluster = yaml.safe_load(self.cp.kubeconfig.read_text())["clusters"][0]["cluster"]
        self._ca = tempfile.NamedTemporaryFile(suffix=".crt")  # noqa: SIM115 (lives as long as the proxy)
        self._ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        self._ca.flush()
        self._tls = ssl.create_default_context(cafile=self._ca.name)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="apiserver-proxy")
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(
        self, method: str, pattern: str, *, times: int, status: int = 429, retry_after: str | None = "1"
    ) -> Rule:
        rule = Rule(method.upper(), re.compile(pattern), times, status, retry_after)
        with self._lock:
            self.rules.append(rule)
        return rule

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._ca.close()

    def _match(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.hits < rule.times and rule.pattern.search(target):
                    rule.hits += 1
                    self.injected.append((method, target, rule.status))
                    return rule
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = [line for line in lines[1:] if line]
                length = next(
                    (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0
                )
                body = await reader.readexactly(length) if length else b""
                rule = self._match(method, target)
                if rule is not None:
                    writer.write(_status_answer(rule))
                    await writer.drain()
                    continue  # the client may send its retry on the same connection
                await self._forward(method, target, headers, body, writer)
                return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _forward(
        self, method: str, target: str, headers: list[str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        host, port = self._upstream
        up_reader, up_writer = await asyncio.open_connection(host, port, ssl=self._tls, server_hostname=host)
        kept = [h for h in headers if not h.lower().startswith(("connection:", "host:", "keep-alive:"))]
        request = "\r\n".join(
            [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", *kept, "Connection: close", "", ""]
        ).encode("latin-1")
        up_writer.write(request + body)
        await up_writer.drain()
        with self._lock:
            self.forwarded += 1
        try:
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()


def _status_answer(rule: Rule) -> bytes:
    doc: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": rule.message,
        "reason": http.HTTPStatus(rule.status).phrase.replace(" ", ""),
        "code": rule.status,
    }
    body = json.dumps(doc).encode()
    extra = f"Retry-After: {rule.retry_after}\r\n" if rule.retry_after else ""
    head = (
        f"HTTP/1.1 {rule.status} {http.HTTPStatus(rule.status).phrase}\r\nContent-Type: "
        f"application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def proxied_kubeconfig(kubeconfig: Any, proxy: FaultProxy, path: Any) -> Any:
    """A copy of ``kubeconfig`` whose cluster is the proxy (plain HTTP on loopback)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for c in doc["clusters"]:
        c["cluster"] = {"server": proxy.url}
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path
