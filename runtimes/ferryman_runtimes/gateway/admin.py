"""The admin API: rollout control and A/B feedback, on its own listener (loopback by default), token-guarded.

Every request needs ``Authorization: Bearer <token>`` (compared in constant time). Every action is logged
with who (``X-Ferryman-Actor``, default "admin") and why (the ``reason`` in the body).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson

from ferryman.errors import FerrymanError, InvalidInput, Unauthorized
from ferryman_runtimes.asgi.http import Request, read_body, send_json
from ferryman_runtimes.rollout_controller import RolloutController

audit = logging.getLogger("ferryman.audit")

ACTIONS = ("promote", "rollback", "pause", "resume")
MAX_ADMIN_BODY = 64 * 1024


class AdminApp:
    def __init__(self, controller: RolloutController, *, token: str) -> None:
        if len(token) < 16:
            raise ValueError("admin token must be at least 16 characters")
        self.controller = controller
        self._token = token.encode()

    def _authorize(self, request: Request) -> str:
        header = request.header(b"authorization") or ""
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), self._token):
            raise Unauthorized("missing or invalid admin token (Authorization: Bearer <token>)")
        return (request.header(b"x-ferryman-actor") or "admin")[:64]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope)
        actor = "anonymous"
        try:
            actor = self._authorize(request)
            await self.route(request, receive, send, actor)
        except FerrymanError as err:
            if request.method == "POST":  # refused control actions are audited too (never the token)
                audit.warning(
                    "admin refused method=%s path=%s actor=%s status=%d error=%r",
                    request.method,
                    request.path[:200],
                    actor,
                    err.status,
                    str(err)[:300],
                )
            headers = (
                [(b"www-authenticate", b'Bearer realm="ferryman-admin"')]
                if isinstance(err, Unauthorized)
                else None
            )
            await send_json(send, err.status, {"error": str(err)}, headers=headers)

    async def route(self, request: Request, receive: Any, send: Any, actor: str) -> None:
        c = self.controller
        path = request.path.rstrip("/")
        if request.method == "GET" and path == "/status":
            return await send_json(send, 200, c.status())
        if request.method != "POST":
            return await send_json(send, 404, {"error": f"no route for {request.method} {request.path}"})
        body = await read_body(request, receive, limit=MAX_ADMIN_BODY)
        doc = _object(body)
        if path.lstrip("/") in ACTIONS:
            action = path.lstrip("/")
            reason = str(doc.get("reason") or f"{action} requested by {actor}")[:500]
            version = doc.get("version")
            if version is not None and not isinstance(version, str):
                raise InvalidInput("version: must be a string")
            decision = c.act(action, actor=actor, reason=reason, version=version)
            audit.info(
                "admin action=%s actor=%s reason=%r weights=%s", action, actor, reason, decision.weights
            )
            return await send_json(send, 200, {"decision": decision.to_dict(), "status": c.status()})
        if path == "/reload":
            reloaded = c.reload_spec()
            audit.info("admin action=reload actor=%s", actor)
            return await send_json(
                send, 200, {"decision": reloaded.to_dict() if reloaded else None, "status": c.status()}
            )
        if path == "/feedback":
            rid, label = doc.get("id"), doc.get("label")
            if not isinstance(rid, str) or type(label) is not int:
                raise InvalidInput('feedback needs {"id": <request id string>, "label": <integer class>}')
            result = c.record_feedback(rid, label)
            return await send_json(send, 200, result)
        return await send_json(send, 404, {"error": f"no route for POST {request.path}"})


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"request body: malformed JSON: {err}") from err
    if not isinstance(doc, dict):
        raise InvalidInput("request body: must be a JSON object")
    return doc
