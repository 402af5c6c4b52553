"""The operator's Kubernetes client: a thin async layer over the REST API (httpx), nothing generated.

* Every request is retried with capped, jittered exponential backoff when the apiserver is overloaded or
  restarting (429, 500, 502, 503, 504; ``Retry-After`` is honoured) or the connection fails; a 401 (a
  rotated ServiceAccount token) logs in again and retries. Only when the retries are spent does a call
  raise :class:`ApiError` (status 0 for a connection failure) with the apiserver's code, reason and message.
* :meth:`KubeClient.apply` is server-side apply (field manager ``ferryman-operator``, forced): applying
  the same object twice changes nothing.
* :meth:`KubeClient.replace_status` is a PUT of the status subresource carrying ``resourceVersion``: the
  apiserver answers 409 when someone else wrote first, and the caller re-reads and decides again
  (optimistic concurrency).
* :meth:`KubeClient.list_page` and :meth:`KubeClient.watch` feed the watch caches (:mod:`.informer`).

Why not the ``kubernetes`` / ``kubernetes_asyncio`` packages: their generated models deserialise every
object into Python classes (several times the CPU and memory of a plain JSON parse at thousands of
objects), and the operator only needs a dozen verbs on plain dicts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import kopf
import orjson

from ferryman_operator.kube.config import connection_info
from ferryman_operator.kube.kinds import (  # noqa: F401  (re-exported: callers import kinds from here too)
    CLUSTER_SERVING_RUNTIME,
    CONFIG_MAP,
    DEPLOYMENT,
    EVENT,
    HTTP_ROUTE,
    INFERENCE_SERVICE,
    KINDS,
    LEASE,
    MODEL_DEPLOYMENT,
    RAY_SERVICE,
    SERVICE,
    Kind,
    kind_of,
)

log = logging.getLogger("ferryman.operator.kube")

FIELD_MANAGER = "ferryman-operator"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Items = list[dict[str, Any]]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gone(self) -> bool:
        return self.status == 410


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: str | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the server's ``Retry-After`` (seconds)
    when it gave one, else full-jitter exponential backoff ``[0.5, 1) * min(cap, base * 2**(attempt-1))``."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + rand() / 2)


def _error(resp: httpx.Response, method: str, path: str) -> ApiError:
    reason, message = "", resp.text[:500]
    try:
        doc = resp.json()
        reason, message = doc.get("reason", ""), doc.get("message", message)
    except ValueError:
        pass
    return ApiError(resp.status_code, reason or resp.reason_phrase, message, method=method, path=path)


class KubeClient:
    """``retries``: attempts after the first for 429/5xx/connection failures; ``backoff``/``backoff_cap``:
    the first and the largest wait in seconds."""

    def __init__(
        self,
        info: kopf.ConnectionInfo | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 8,
        backoff: float = 0.2,
        backoff_cap: float = 10.0,
        login: Callable[[], kopf.ConnectionInfo] = connection_info,
    ) -> None:
        self._timeout = timeout
        self._login = login
        self.retries = retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.counts: Counter[str] = Counter()  # requests sent, by verb (retries included)
        self.retried: Counter[int] = Counter()  # retries, by status (0: connection failure)
        self._client = self._connect(info or login())

    def _connect(self, info: kopf.ConnectionInfo) -> httpx.AsyncClient:
        headers = {"Accept": "application/json", "User-Agent": FIELD_MANAGER}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = httpx.BasicAuth(info.username, info.password or "") if info.username else None
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        return httpx.AsyncClient(
            base_url=info.server,
            verify=info.as_ssl_context(),
            headers=headers,
            auth=auth,
            timeout=self._timeout,
            limits=limits,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _relogin(self) -> None:
        old = self._client
        self._client = self._connect(self._login())
        await old.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        content = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else {}
        relogged = False
        attempt = 0
        while True:
            self.counts[method] += 1
            retry_after: str | None = None
            try:
                resp = await self._client.request(
                    method, path, content=content, params=params, headers=headers
                )
            except httpx.TransportError as err:
                if attempt >= self.retries:
                    raise ApiError(
                        0, "Unreachable", f"{type(err).__name__}: {err}", method=method, path=path
                    ) from err
                status = 0
            else:
                status = resp.status_code
                if status < 400:
                    return orjson.loads(resp.content) if resp.content else None
                if status == 401 and not relogged:  # rotated ServiceAccount token: log in again, once
                    relogged = True
                    await self._relogin()
                    continue
                if status not in RETRY_STATUSES or attempt >= self.retries:
                    raise _error(resp, method, path)
                retry_after = resp.headers.get("Retry-After")
            attempt += 1
            self.retried[status] += 1
            delay = backoff_delay(attempt, base=self.backoff, cap=self.backoff_cap, retry_after=retry_after)
            log.info(
                "%s %s: %s, retry %d in %.2fs", method, path, status or "connection failed", attempt, delay
            )
            await asyncio.sleep(delay)

    # -- reads ----------------------------------------------------------------------------------------
    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.request("GET", kind.path(namespace, name))
        except ApiError as err:
            if err.not_found:
                return None
            raise
        return obj

    async def list_page(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        limit: int = 500,
        cont: str | None = None,
    ) -> tuple[Items, str, str | None]:
        """One page: (items, the list's resourceVersion, the continue token or None)."""
        params = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        if cont:
            params["continue"] = cont
        doc = await self.request("GET", kind.path(namespace), params=params)
        items: Items = doc.get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        meta = doc.get("metadata") or {}
        return items, str(meta.get("resourceVersion", "")), meta.get("continue") or None

    async def list(self, kind: Kind, namespace: str | None, *, label_selector: str | None = None) -> Items:
        items, _rv = await self.list_all(kind, namespace, label_selector=label_selector)
        return items

    async def list_all(
        self, kind: Kind, namespace: str | None, *, label_selector: str | None = None, limit: int = 500
    ) -> tuple[Items, str]:
        """Every page: (items, resourceVersion of the list, to start a watch from)."""
        out: Items = []
        cont: str | None = None
        while True:
            items, rv, cont = await self.list_page(
                kind, namespace, label_selector=label_selector, limit=limit, cont=cont
            )
            out.extend(items)
            if not cont:
                return out, rv

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}``) from
        ``resource_version`` until the server closes the stream after ``timeout_seconds``. A failure to
        open the stream raises :class:`ApiError` (410 when the version is too old: list again)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        path = kind.path(namespace)
        self.counts["WATCH"] += 1
        timeout = httpx.Timeout(self._timeout, read=timeout_seconds + 30)
        try:
            async with self._client.stream("GET", path, params=params, timeout=timeout) as resp:
                if resp.status_code == 401:
                    await self._relogin()
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error(resp, "WATCH", path)
                async for line in resp.aiter_lines():
                    if line:
                        yield orjson.loads(line)
        except httpx.TransportError as err:
            raise ApiError(
                0, "Unreachable", f"{type(err).__name__}: {err}", method="WATCH", path=path
            ) from err

    # -- writes ---------------------------------------------------------------------------------------
    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply: create or update to exactly the fields given (idempotent)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        result: dict[str, Any] = await self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=obj,
            params=params,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        result: dict[str, Any] = await self.request(
            "POST", kind.path(obj["metadata"].get("namespace")), body=obj
        )
        return result

    async def replace(self, obj: Mapping[str, Any], *, sub: str | None = None) -> dict[str, Any]:
        """PUT the object (or a subresource); ``metadata.resourceVersion`` makes it conditional."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "PUT", kind.path(meta.get("namespace"), meta["name"], sub), body=obj
        )
        return result

    async def replace_status(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.replace(obj, sub="status")

    async def merge_patch(
        self, kind: Kind, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH", kind.path(namespace, name), body=patch, content_type="application/merge-patch+json"
        )
        return result

    async def delete(self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None) -> bool:
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", kind.path(namespace, name), body=body)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return True
