"""Tiny ASGI HTTP helpers: a request view over the scope, bounded body reading, response senders."""

from __future__ import annotations

from typing import Any

import orjson

from ferryman.errors import InvalidInput, PayloadTooLarge, RequestTimeout

_JSON_HEADERS = [(b"content-type", b"application/json")]

# Set in the scope by the server protocol (ferryman_runtimes.asgi.limits) when it cut off a body that did not
# arrive within the request timeout: the disconnect that follows is a timeout, not a client that went away.
TIMED_OUT = "ferryman.timed_out"


class Request:
    __slots__ = ("_headers", "method", "path", "query", "scope")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self._headers: dict[bytes, bytes] | None = None

    @property
    def headers(self) -> dict[bytes, bytes]:
        """Lower-case name -> value (the last one of repeated headers), built once per request."""
        if self._headers is None:
            self._headers = {k.lower(): v for k, v in self.scope["headers"]}
        return self._headers

    def header(self, name: bytes) -> str | None:
        """The value of the header ``name`` (lower-case bytes), or None."""
        value = (self._headers if self._headers is not None else self.headers).get(name)
        return None if value is None else value.decode("latin-1")

    def cookie(self, name: str) -> str | None:
        raw = self.header(b"cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def query_param(self, name: str) -> str | None:
        from urllib.parse import parse_qs

        values = parse_qs(self.query.decode("latin-1")).get(name)
        return values[0] if values else None


def body_too_large(limit: int, *, declared: int | None = None) -> PayloadTooLarge:
    """The error for a body over ``limit``: by its declared length (refused before reading), or as it arrived.
    Every path that reads bodies (ASGI, direct dispatch) says it in these words."""
    if declared is not None:
        return PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def read_body(request: Request, receive: Any, *, limit: int) -> bytes:
    declared = request.header(b"content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError as err:
            raise InvalidInput("content-length: must be an integer") from err
        if n > limit:
            raise body_too_large(limit, declared=n)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if request.scope.get(TIMED_OUT):
                raise RequestTimeout("request body not received within the request timeout")
            raise InvalidInput("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Any, status: int, obj: Any, *, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    await send_bytes(send, status, body, [*_JSON_HEADERS, *(headers or [])])


async def send_text(send: Any, status: int, text: bytes, *, content_type: bytes) -> None:
    await send_bytes(send, status, text, [(b"content-type", content_type)])
