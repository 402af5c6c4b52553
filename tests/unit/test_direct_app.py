"""Which apps the protocol may answer directly (no sockets): the lookup through wrappers, and the routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ferryman.dataplane import DataPlane, ModelRepository
from ferryman_runtimes.asgi.app import InferenceApp
from ferryman_runtimes.asgi.direct import direct_app, status_line
from ferryman_runtimes.asgi.security import ApiKeyMiddleware, ApiKeys


class OtherMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Remote(InferenceApp):
    async_compute = True


def make_app() -> InferenceApp:
    return InferenceApp(DataPlane(ModelRepository()))


def test_the_app_and_its_known_wrappers_take_part(tmp_path: Path) -> None:
    app = make_app()
    assert direct_app(app) is app
    assert direct_app(ProxyHeadersMiddleware(app)) is app  # uvicorn's: rewrites the client address only
    keys = tmp_path / "keys"
    keys.write_text("k" * 32 + "\n")
    guarded = ApiKeyMiddleware(app, keys=ApiKeys(keys))
    proxied = ProxyHeadersMiddleware(guarded)  # type: ignore[arg-type]  # an ASGI3 app; uvicorn types it narrower
    assert direct_app(proxied) is guarded  # the key check stays in front


def test_an_unknown_wrapper_turns_direct_dispatch_off(tmp_path: Path) -> None:
    app = make_app()
    assert direct_app(OtherMiddleware(app)) is None
    assert direct_app(ProxyHeadersMiddleware(OtherMiddleware(app))) is None
    keys = tmp_path / "keys"
    keys.write_text("k" * 32 + "\n")
    guarded = ApiKeyMiddleware(OtherMiddleware(app), keys=ApiKeys(keys))
    assert not guarded.direct_target("POST", "/v2/models/m/infer")


def test_only_local_predictions_are_direct_targets() -> None:
    app = make_app()
    assert app.direct_target("POST", "/v2/models/m/infer")
    assert app.direct_target("POST", "/v2/models/m/versions/2/infer")
    assert app.direct_target("POST", "/v1/models/m:predict")
    for method, path in [
        ("GET", "/v2/models/m/infer"),
        ("POST", "/v2/models/m"),
        ("POST", "/v2/health/ready"),
        ("POST", "/v1/models/m:explain"),
        ("POST", "/v3/models/m/infer"),
        ("POST", "/"),
    ]:
        assert not app.direct_target(method, path), (method, path)
    assert not Remote(DataPlane(ModelRepository())).direct_target("POST", "/v2/models/m/infer")


def test_status_lines() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(413).startswith(b"HTTP/1.1 413 ") and status_line(413).endswith(b"\r\n")
    assert status_line(599) == b"HTTP/1.1 599 Status\r\n"


def test_uvicorn_header_callbacks_are_what_the_limits_protocol_inlines() -> None:
    """``LimitedHttpToolsProtocol`` inlines uvicorn's ``on_url``/``on_header`` (hot: once per header); an
    upgrade of uvicorn that changes them must fail here, not silently diverge."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    def body(fn: Any) -> list[str]:
        return [line.strip() for line in inspect.getsource(fn).splitlines()[1:] if line.strip()]

    assert body(HttpToolsProtocol.on_url) == ["self.url += url"]
    assert body(HttpToolsProtocol.on_header) == [
        "name = name.lower()",
        'if name == b"expect" and value.lower() == b"100-continue":',
        "self.expect_100_continue = True",
        "self.headers.append((name, value))",
    ]
