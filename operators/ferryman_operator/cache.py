"""What the operator knows about the cluster: watch caches of the ModelDeployments and of every object it
owns, indexed by owner, and the mapping from a watch event to the ModelDeployment to reconcile.

* ModelDeployments: one informer per watched namespace (or one cluster-wide), full objects (minus
  managed fields).
* Owned kinds (every kind a backend creates): one informer per kind and namespace, selected by the
  ``app.kubernetes.io/managed-by=ferryman-operator`` label. Stored trimmed to what the controller reads:
  identity, owner, labels, the operator's ``applied`` annotation, ``spec.replicas`` and ``status``. The
  full spec is never needed: the controller compares what it would apply with the hash it stamped on the
  object, and notices edits by others through ``metadata.generation`` / ``resourceVersion``.
* :meth:`Cache.remember_md` / :meth:`Cache.remember_owned` store what the operator's own writes returned,
  so the next reconcile reads them even before the watch delivers them, and the watch's echo of the
  operator's own write triggers nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ferryman_operator import names
from ferryman_operator.kube.client import KubeClient
from ferryman_operator.kube.informer import Informer, Obj, strip_managed_fields
from ferryman_operator.kube.kinds import MODEL_DEPLOYMENT, Kind

Key = tuple[str, str]  # (namespace, ModelDeployment name)
OwnedKey = tuple[str, str]  # (kind name, object name)
OWNED_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
_KEEP_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "ownerReferences",
    "deletionTimestamp",
)


def trim_owned(obj: Obj) -> Obj:
    """The part of an owned object the controller reads (a small fraction of a Deployment)."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in _KEEP_META if k in meta}
    applied = (meta.get("annotations") or {}).get(names.ANNOTATION_APPLIED)
    if applied is not None:
        kept["annotations"] = {names.ANNOTATION_APPLIED: applied}
    out: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept}
    spec = obj.get("spec")
    if isinstance(spec, dict) and "replicas" in spec:
        out["spec"] = {"replicas": spec["replicas"]}
    if obj.get("status") is not None:
        out["status"] = obj["status"]
    return out


def owner_of(obj: Obj) -> Key | None:
    """The ModelDeployment an owned object belongs to (its controller owner reference, else its label)."""
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == MODEL_DEPLOYMENT.kind and ref.get("controller"):
            return namespace, str(ref.get("name"))
    label = (meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT)
    return (namespace, label) if label else None


class Cache:
    """``on_md(event_type, new, old)`` and ``on_owned(owner_key, event_type, new, old)`` are called for every
    change the watches deliver (not for the echo of the operator's own writes)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespaces: Iterable[str],
        kinds: Iterable[Kind],
        on_md: Callable[[str, Obj | None, Obj | None], None],
        on_owned: Callable[[Key, str, Obj | None, Obj | None], None],
    ) -> None:
        scopes: list[str | None] = list(namespaces) or [None]
        self.on_owned = on_owned
        self.md_informers = {
            ns: Informer(kube, MODEL_DEPLOYMENT, ns, on_event=on_md, transform=strip_managed_fields)
            for ns in scopes
        }
        self.owned_informers: dict[tuple[str, str | None], Informer] = {}
        for kind in kinds:
            for ns in scopes:
                self.owned_informers[(kind.kind, ns)] = Informer(
                    kube,
                    kind,
                    ns,
                    label_selector=OWNED_SELECTOR,
                    transform=trim_owned,
                    on_event=lambda t, new, old: self._owned_event(t, new, old),
                )
        self.by_owner: dict[Key, dict[OwnedKey, Obj]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        for informer in [*self.md_informers.values(), *self.owned_informers.values()]:
            self._tasks.append(asyncio.create_task(informer.run(), name=repr(informer)))

    async def wait_synced(self, *, owned: bool = True) -> None:
        informers = [*self.md_informers.values(), *(self.owned_informers.values() if owned else ())]
        await asyncio.gather(*(i.synced.wait() for i in informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def lists(self) -> int:
        return sum(i.lists for i in [*self.md_informers.values(), *self.owned_informers.values()])

    # -- reads ----------------------------------------------------------------------------------------
    def _md_informer(self, namespace: str) -> Informer | None:
        return self.md_informers.get(namespace) or self.md_informers.get(None)  # type: ignore[arg-type]

    def md(self, key: Key) -> Obj | None:
        informer = self._md_informer(key[0])
        return informer.get(*key) if informer is not None else None

    def md_keys(self) -> list[Key]:
        return [k for i in self.md_informers.values() for k in i.store]

    def owned(self, key: Key) -> dict[OwnedKey, Obj]:
        """Every cached object owned by (or labelled for) the ModelDeployment ``key``, by (kind, name)."""
        return self.by_owner.get(key, {})

    def available(self, kind: Kind, namespace: str) -> bool:
        informer = self.owned_informers.get((kind.kind, namespace)) or self.owned_informers.get(
            (kind.kind, None)
        )
        return informer is not None and informer.available

    # -- the operator's own writes --------------------------------------------------------------------
    def remember_md(self, body: Obj) -> None:
        informer = self._md_informer(str(body["metadata"].get("namespace") or ""))
        if informer is not None:
            informer.put(body)

    def remember_owned(self, obj: Obj) -> None:
        meta = obj["metadata"]
        informer = self.owned_informers.get((obj["kind"], meta.get("namespace"))) or self.owned_informers.get(
            (obj["kind"], None)
        )
        if informer is None:
            return
        informer.put(obj)
        stored = informer.get(str(meta.get("namespace") or ""), meta["name"])
        if stored is not None:
            self._index(stored)

    # -- index ----------------------------------------------------------------------------------------
    def _index(self, obj: Obj) -> Key | None:
        owner = owner_of(obj)
        if owner is not None:
            self.by_owner.setdefault(owner, {})[(obj["kind"], obj["metadata"]["name"])] = obj
        return owner

    def _owned_event(self, event_type: str, new: Obj | None, old: Obj | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        if event_type == "DELETED":
            owner = owner_of(obj)
            if owner is not None:
                objects = self.by_owner.get(owner, {})
                objects.pop((obj["kind"], obj["metadata"]["name"]), None)
                if not objects:
                    self.by_owner.pop(owner, None)
        else:
            owner = self._index(obj)
        if owner is not None:
            self.on_owned(owner, event_type, new, old)
