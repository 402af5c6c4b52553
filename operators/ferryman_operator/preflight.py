"""Model URI checks before anything is rolled out: an unreachable model is a Degraded resource, not a
crash-looping pod.

``http(s)://`` URIs are asked with ``HEAD`` (falling back to a one-byte ranged ``GET`` for servers that
refuse HEAD); any answer below 400 counts as reachable. Other schemes (paths inside the image or a volume,
``s3://`` with the pods' own credentials) cannot be checked from the operator and are left to the version
servers, whose readiness then tells. Results are cached per URI for ``ttl`` seconds, so a fixed URI is
noticed within that time and a broken one is not asked on every reconcile.
"""

from __future__ import annotations

import time

import httpx

from ferryman.spec import ModelDeployment
from ferryman.store.base import redact


class Preflight:
    def __init__(self, *, enabled: bool = True, ttl: float = 60.0, timeout: float = 5.0) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def problems(self, md: ModelDeployment, *, versions: tuple[str, ...] | None = None) -> list[str]:
        """One message per unreachable model URI of ``versions`` (default: every version)."""
        if not self.enabled:
            return []
        wanted = set(versions) if versions is not None else {v.name for v in md.spec.versions}
        out = []
        for v in md.spec.versions:
            if v.name in wanted:
                problem = await self.check(v.uri)
                if problem:
                    out.append(f"version {v.name}: model {redact(v.uri)} is unreachable: {problem}")
        return out

    async def check(self, uri: str) -> str | None:
        if not uri.startswith(("http://", "https://")):
            return None
        now = time.monotonic()
        cached = self._cache.get(uri)
        if cached is not None and cached[0] > now:
            return cached[1]
        problem = await self._ask(uri)
        self._cache[uri] = (now + self.ttl, problem)
        return problem

    async def _ask(self, uri: str) -> str | None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client:
                resp = await client.head(uri)
                status, phrase = resp.status_code, resp.reason_phrase
                if status in (405, 501):  # no HEAD: the first byte only (the body is never read)
                    async with client.stream("GET", uri, headers={"Range": "bytes=0-0"}) as streamed:
                        status, phrase = streamed.status_code, streamed.reason_phrase
        except httpx.TransportError as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if status >= 400:
            return f"HTTP {status} {phrase}"
        return None
