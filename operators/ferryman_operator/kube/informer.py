"""Watch caches: list once, then follow a watch, so reads come from memory instead of the apiserver.

One :class:`Informer` per (kind, namespace or cluster-wide, label selector), as client-go's reflector:

* list (paginated) and replace the store, reporting what was added, changed or removed since the last
  list; then watch from the list's ``resourceVersion`` with bookmarks, reconnecting from the last version
  seen when the server ends the stream, and listing again when that version is too old (410 Gone);
* a kind the cluster does not serve or the operator may not read (404/403: KubeRay or KServe not
  installed) is reported unavailable and looked for again every ``absent_retry`` seconds;
* ``transform`` trims each object before it is stored (managed fields, whatever the caller never reads),
  which is most of the memory at thousands of objects;
* ``on_event(type, new, old)`` is called for every change, synchronously on the event loop (keep it cheap:
  enqueue a key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ferryman_operator.kube.client import ApiError, KubeClient, backoff_delay
from ferryman_operator.kube.kinds import Kind

log = logging.getLogger("ferryman.operator.cache")

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace, name)
Handler = Callable[[str, Obj | None, Obj | None], None]


def obj_key(obj: Obj) -> ObjKey:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def resource_version(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def newer(a: str, b: str) -> bool:
    """Whether resourceVersion ``a`` is newer than ``b`` (etcd revisions are integers; the API calls them
    opaque, so anything else counts as different = newer)."""
    try:
        return int(a) > int(b)
    except ValueError:
        return a != b


def strip_managed_fields(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if annotations:
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


class Informer:
    def __init__(
        self,
        kube: KubeClient,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        on_event: Handler | None = None,
        transform: Callable[[Obj], Obj] = strip_managed_fields,
        watch_timeout: int = 300,
        absent_retry: float = 300.0,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_event = on_event
        self.transform = transform
        self.watch_timeout = watch_timeout
        self.absent_retry = absent_retry
        self.store: dict[ObjKey, Obj] = {}
        self.synced = asyncio.Event()
        self.available = False
        self.lists = 0  # how many times it listed (the first, plus one per 410 or failure)

    def __repr__(self) -> str:
        return f"Informer({self.kind.kind}, {self.namespace or '<all>'}, {self.label_selector or ''})"

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.store.get((namespace, name))

    def put(self, obj: Obj) -> None:
        """Store an object our own write returned, unless the cache already holds a newer one (the watch
        delivers the same object a moment later; reads in between see our write, not the old copy)."""
        obj = self.transform(obj)
        key = obj_key(obj)
        old = self.store.get(key)
        if old is None or newer(resource_version(obj), resource_version(old)):
            self.store[key] = obj

    def _emit(self, event_type: str, new: Obj | None, old: Obj | None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event_type, new, old)
            except Exception:  # a handler bug must not stop the watch
                log.exception("%r: event handler failed", self)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                rv = await self._list()
                failures = 0
            except ApiError as err:
                if err.status in (403, 404):
                    if self.available or not self.synced.is_set():
                        log.warning(
                            "%r: not available (%s %s); looking again every %.0fs",
                            self,
                            err.status,
                            err.reason,
                            self.absent_retry,
                        )
                    self.available = False
                    self._replace({})
                    self.synced.set()
                    await asyncio.sleep(self.absent_retry)
                    continue
                failures += 1
                delay = backoff_delay(failures, base=0.5, cap=30.0)
                log.warning("%r: list failed (%s); again in %.1fs", self, err, delay)
                await asyncio.sleep(delay)
                continue
            await self._follow(rv)

    async def _list(self) -> str:
        items, rv = await self.kube.list_all(self.kind, self.namespace, label_selector=self.label_selector)
        self.lists += 1
        self.available = True
        self._replace({obj_key(o): self.transform(o) for o in items})
        self.synced.set()
        return rv

    def _replace(self, new: dict[ObjKey, Obj]) -> None:
        old, self.store = self.store, new
        for key, obj in new.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj, None)
            elif resource_version(before) != resource_version(obj):
                self._emit("MODIFIED", obj, before)
        for key in old.keys() - new.keys():
            self._emit("DELETED", None, old[key])

    async def _follow(self, rv: str) -> None:
        """Watch from ``rv`` until the version is gone (then return: list again)."""
        failures = 0
        while True:
            try:
                async for event in self.kube.watch(
                    self.kind,
                    self.namespace,
                    resource_version=rv,
                    label_selector=self.label_selector,
                    timeout_seconds=self.watch_timeout,
                ):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return
                        raise ApiError(
                            int(obj.get("code") or 500),
                            str(obj.get("reason", "")),
                            str(obj.get("message", "")),
                            method="WATCH",
                            path=self.kind.plural,
                        )
                    rv = resource_version(obj) or rv
                    if kind == "BOOKMARK":
                        continue
                    obj.setdefault("apiVersion", self.kind.api_version)
                    obj.setdefault("kind", self.kind.kind)
                    self._apply(str(kind), self.transform(obj))
                    failures = 0
            except ApiError as err:
                if err.gone:
                    return
                failures += 1
                if failures > 5:
                    return  # something is off with this version: list again
                delay = backoff_delay(failures, base=0.5, cap=30.0)
                log.info("%r: watch interrupted (%s); again in %.1fs", self, err, delay)
                await asyncio.sleep(delay)

    def _apply(self, event_type: str, obj: Obj) -> None:
        key = obj_key(obj)
        old = self.store.get(key)
        if event_type == "DELETED":
            self.store.pop(key, None)
            self._emit("DELETED", None, old or obj)
            return
        if old is not None:
            if resource_version(obj) == resource_version(old):
                self.store[key] = obj
                return  # the echo of our own write, already stored by put(): nothing new
            if not newer(resource_version(obj), resource_version(old)):
                return  # older than what our own write already stored
        self.store[key] = obj
        self._emit("ADDED" if old is None else "MODIFIED", obj, old)
