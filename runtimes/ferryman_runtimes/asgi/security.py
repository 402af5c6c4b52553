"""Optional authentication of the prediction endpoints: API keys / bearer tokens from a file or a Secret.

    app = protect(app, api_keys="/etc/ferryman/api-keys")     # a file: one key per line ("#" comments)
    # a directory: one file per key (a mounted Secret)
    app = protect(app, api_keys="/var/run/secrets/api-keys")

A request carries its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are compared in
constant time (SHA-256 digests, every known key compared, no early exit). Health, readiness and metrics
stay open so probes and Prometheus need no key. A refused request gets ``401 {"error": ...}`` with a
``WWW-Authenticate`` header; neither the supplied nor the known keys ever reach a log.

The key source is re-read when it changes, without a restart: the hot path only compares a monotonic clock,
and at most once per ``check_seconds`` stats the file (or the directory's entries, which follows the
symlink swap Kubernetes does when a Secret is updated). A file that cannot be read keeps the last good
keys (an editor's truncate-then-write must not lock everyone out); an empty file revokes every key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ferryman.errors import FerrymanError
from ferryman_runtimes.asgi.app import Answer
from ferryman_runtimes.asgi.direct import direct_app

log = logging.getLogger("ferryman.security")

OPEN_PATHS = frozenset(
    {"/v2/health/live", "/v2/health/ready", "/v1/health/live", "/healthz", "/readyz", "/metrics"}
)
CHECK_SECONDS = 1.0
MIN_KEY_LENGTH = 16
_CHALLENGE = [(b"www-authenticate", b'Bearer realm="ferryman", charset="UTF-8"')]
_REFUSAL_HEADERS = [(b"content-type", b"application/json"), *_CHALLENGE]
_REFUSAL = orjson.dumps(
    {"error": "missing or invalid API key (send Authorization: Bearer <key> or X-API-Key)"}
)


class KeySourceError(FerrymanError):
    """The key file or directory cannot be used (missing, unreadable)."""


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def parse_key_file(text: str) -> list[str]:
    """One key per line; blank lines and ``#`` comments are ignored; surrounding whitespace is not part of a
    key."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class ApiKeys:
    """The accepted keys (as digests), re-read from ``path`` when it changes."""

    def __init__(
        self, path: str | Path, *, check_seconds: float = CHECK_SECONDS, clock: Any = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.check_seconds = check_seconds
        self._clock = clock
        self._digests: tuple[bytes, ...] = ()
        self._signature: object = None
        self._next_check = 0.0
        self._failing = False
        self.reloads = 0
        try:
            self._install(self._stat_signature(), self._read_keys())
        except (OSError, UnicodeDecodeError) as err:
            raise KeySourceError(f"cannot read API keys from {self.path}: {type(err).__name__}") from err

    # -- loading ------------------------------------------------------------------------------------
    def _stat_signature(self) -> object:
        """Cheap identity of the source: (mtime, size, inode) of the file, or of every visible file in the
        dir."""
        p = self.path
        if p.is_dir():
            entries = []
            with os.scandir(p) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue  # Kubernetes' ..data / ..<timestamp> plumbing
                    try:
                        st = os.stat(e.path)  # follows the Secret's symlinks
                    except OSError:
                        continue
                    entries.append((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
            return ("dir", tuple(sorted(entries)))
        st = os.stat(p)
        return ("file", st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_keys(self) -> list[str]:
        p = self.path
        if p.is_dir():
            keys = []
            for entry in sorted(p.iterdir()):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                key = entry.read_text().strip()
                if key:
                    keys.append(key)
            return keys
        return parse_key_file(p.read_text())

    def reload(self) -> bool:
        """Re-read the source if it changed; True when the key set was replaced."""
        try:
            signature = self._stat_signature()
            if signature == self._signature:
                return False
            keys = self._read_keys()
        except (OSError, UnicodeDecodeError) as err:
            if not self._failing:  # once per failure streak, not once per check
                log.error(
                    "cannot read API keys from %s (%s); keeping the previous %d key(s)",
                    self.path,
                    type(err).__name__,
                    len(self._digests),
                )
                self._failing = True
            return False
        self._install(signature, keys)
        return True

    def _install(self, signature: object, keys: list[str]) -> None:
        short = sum(1 for k in keys if len(k) < MIN_KEY_LENGTH)
        if short:
            log.warning(
                "%d API key(s) in %s are shorter than %d characters", short, self.path, MIN_KEY_LENGTH
            )
        self._digests = tuple(_digest(k.encode()) for k in keys)
        self._signature = signature
        self._failing = False
        self.reloads += 1
        log.info("loaded %d API key(s) from %s", len(self._digests), self.path)

    def maybe_reload(self) -> None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.check_seconds
            self.reload()

    # -- checking -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, supplied: bytes) -> bool:
        self.maybe_reload()
        if not supplied:
            return False
        candidate = _digest(supplied)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(candidate, known)
        return matched


def supplied_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (empty if none)."""
    for name, value in headers:
        name = name.lower()
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.strip()
    return b""


class ApiKeyMiddleware:
    """ASGI middleware: every HTTP request outside ``open_paths`` needs an accepted key."""

    def __init__(self, app: Any, *, keys: ApiKeys, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths
        self.refused = 0
        self._direct = direct_app(app)

    # -- direct dispatch (ferryman_runtimes.asgi.direct): the same check, then the app's own answer ------
    def direct_target(self, method: str, path: str) -> bool:
        return self._direct is not None and self._direct.direct_target(method, path)

    def direct_start(self, request: Any) -> Any:
        if request.path in self.open_paths or self.keys.accepts(supplied_key(request.scope["headers"])):
            return self._direct.direct_start(request)  # type: ignore[union-attr]
        self.refused += 1
        return 401, _REFUSAL_HEADERS, _REFUSAL

    def direct_finish(
        self, plan: Any, request: Any, body: bytes, *, t0: float, failure: FerrymanError | None = None
    ) -> Answer:
        return self._direct.direct_finish(plan, request, body, t0=t0, failure=failure)  # type: ignore[no-any-return,union-attr]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and scope["path"] in self.open_paths):
            return await self.app(scope, receive, send)
        if self.keys.accepts(supplied_key(scope["headers"])):
            return await self.app(scope, receive, send)
        self.refused += 1
        if kind != "http":  # websocket: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return None
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [*_REFUSAL_HEADERS, (b"content-length", str(len(_REFUSAL)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})
        return None


def protect(app: Any, *, api_keys: str | Path | None, check_seconds: float = CHECK_SECONDS) -> Any:
    """``app`` behind :class:`ApiKeyMiddleware` when ``api_keys`` names a key file or directory, else
    ``app``."""
    if api_keys is None:
        return app
    keys = ApiKeys(api_keys, check_seconds=check_seconds)
    if not len(keys):
        log.warning("API key source %s holds no keys: every prediction request will be refused", api_keys)
    if hasattr(app, "api_keys_required"):
        app.api_keys_required = True  # the app's OpenAPI document declares the schemes
    return ApiKeyMiddleware(app, keys=keys)
