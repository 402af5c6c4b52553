"""Model URI checks against a real HTTP server: reachable, missing, servers without HEAD, nothing listening,
and the per-URI cache."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ferryman.spec import ModelDeployment
from ferryman_operator.preflight import Preflight
from tests.helpers.ports import free_port

HITS: list[str] = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        HITS.append(f"HEAD {self.path}")
        if self.path == "/nohead.onnx":
            self.send_response(405)
        else:
            self.send_response(200 if self.path == "/model.onnx" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        HITS.append(f"GET {self.path} {self.headers.get('Range')}")
        body = b"x"
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def md(*uris: str) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "m"},
            "spec": {"versions": [{"name": f"v{i}", "uri": u} for i, u in enumerate(uris, 1)]},
        }
    )


def test_reachable_missing_and_unchecked(server: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/model.onnx"
    problems = asyncio.run(
        Preflight(ttl=60).problems(
            md(
                f"{server}/model.onnx",
                f"{server}/missing.onnx",
                closed,
                "s3://bucket/m.onnx",
                "/models/m.onnx",
            )
        )
    )
    assert problems[0] == f"version v2: model {server}/missing.onnx is unreachable: HTTP 404 Not Found"
    assert problems[1].startswith(f"version v3: model {closed} is unreachable: ConnectError")
    assert len(problems) == 2


def test_servers_without_head_get_a_one_byte_get(server: str) -> None:
    HITS.clear()
    assert asyncio.run(Preflight().problems(md(f"{server}/nohead.onnx"))) == []
    assert HITS == ["HEAD /nohead.onnx", "GET /nohead.onnx bytes=0-0"]


def test_results_are_cached_per_uri_and_credentials_redacted(server: str) -> None:
    HITS.clear()
    check = Preflight(ttl=60)

    async def twice() -> list[list[str]]:
        return [
            await check.problems(md(f"{server}/model.onnx")),
            await check.problems(md(f"{server}/model.onnx")),
        ]

    assert asyncio.run(twice()) == [[], []]
    assert HITS == ["HEAD /model.onnx"]
    secret = f"http://user:hunter2@127.0.0.1:{free_port()}/m.onnx"
    (problem,) = asyncio.run(Preflight().problems(md(secret)))
    assert "hunter2" not in problem and "***@" in problem


def test_disabled() -> None:
    assert asyncio.run(Preflight(enabled=False).problems(md(f"http://127.0.0.1:{free_port()}/m.onnx"))) == []
