"""The operator process: watch caches feed a keyed work queue; one leader reconciles; a health endpoint.

Reconciles are driven by what changes, as controller-runtime does it:

* a ModelDeployment event (spec edit, action annotation, deletion, a status someone else wrote);
* an event of an object it owns (a Deployment's pods became ready, someone edited or deleted an object),
  mapped to its owner by owner reference;
* a timer the controller set for that resource (the next analysis, a retried prune, a model URI re-check);
* a safety-net resync (FERRYMAN_RESYNC_SECONDS, 10 min by default), spread evenly with jitter so it never
  bursts.

The operator's own writes come back through the watches as the versions it already stored, so they
trigger nothing. Deliberately no finalizers: deletion is plain Kubernetes garbage collection through owner
references, and ``kubectl delete`` never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any

from ferryman_operator.backends.factory import all_kinds
from ferryman_operator.cache import Cache, Key
from ferryman_operator.controller import Controller
from ferryman_operator.kube.client import KubeClient
from ferryman_operator.kube.informer import Obj
from ferryman_operator.leader import LeaderElector
from ferryman_operator.preflight import Preflight
from ferryman_operator.prometheus import PrometheusStats
from ferryman_operator.settings import Settings
from ferryman_operator.workqueue import WorkQueue

log = logging.getLogger("ferryman.operator")


class Operator:
    """Everything one operator process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube: KubeClient | None = None
        self.cache: Cache | None = None
        self.controller: Controller | None = None
        self.elector: LeaderElector | None = None
        self.queue = WorkQueue(self._reconcile, workers=settings.workers)
        self._tasks: list[asyncio.Task[None]] = []
        self._health: asyncio.Server | None = None
        self.synced = False

    # -- life cycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.kube = KubeClient()
        await self._serve_health()
        self.cache = Cache(
            self.kube,
            namespaces=s.namespaces,
            kinds=all_kinds(),
            on_md=self._md_event,
            on_owned=self._owned_event,
        )
        self.controller = Controller(
            kube=self.kube,
            cache=self.cache,
            settings=s,
            is_leader=self.is_leader,
            schedule=self.queue.add_after,
            prometheus=PrometheusStats(
                s.prometheus_url,
                namespace_label=s.prometheus_namespace_label,
                extra_selector=s.analysis_selector,
            ),
            preflight=Preflight(enabled=s.preflight, ttl=s.preflight_ttl_seconds),
        )
        self.cache.start()
        await (
            self.cache.wait_synced()
        )  # reconciling before the caches hold the owned objects would re-apply them
        self.synced = True
        self.queue.start()
        if s.leader_election:
            self.elector = LeaderElector(
                self.kube,
                name=s.lease_name,
                namespace=s.lease_namespace,
                identity=s.identity,
                lease_seconds=s.lease_seconds,
                on_change=self._leadership,
            )
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader-election"))
            log.warning(
                "%s: standing by until it holds the lease %s/%s", s.identity, s.lease_namespace, s.lease_name
            )
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))
        log.warning(
            "ferryman operator %s started: namespaces=%s, %d workers, resync every %ss, prometheus=%s, "
            "%d ModelDeployments",
            s.identity,
            ",".join(s.namespaces) or "<all>",
            s.workers,
            s.resync_seconds,
            s.prometheus_url or "<none>",
            len(self.cache.md_keys()),
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.stop()
        if self.cache is not None:
            await self.cache.stop()
        if self.elector is not None:
            await self.elector.release()
        if self._health is not None:
            self._health.close()
        if self.kube is not None:
            await self.kube.close()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.stop()

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    # -- inputs ---------------------------------------------------------------------------------------
    def _md_event(self, event_type: str, new: Obj | None, old: Obj | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        meta = obj["metadata"]
        key: Key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.queue.forget(key)
            if self.controller is not None:
                self.controller.forget(key)
            return
        self.queue.add(key, urgent=not obj.get("status"))  # a new resource: its first status goes first

    def _owned_event(self, owner: Key, event_type: str, new: Obj | None, old: Obj | None) -> None:
        if event_type == "DELETED" and old is not None and self.controller is not None:
            self.controller.deleted(owner, str(old.get("kind")), str(old["metadata"]["name"]))
        if self.cache is not None and self.cache.md(owner) is not None:
            self.queue.add(owner)

    def _leadership(self, leader: bool) -> None:
        if leader and self.cache is not None:
            for key in self.cache.md_keys():
                self.queue.add(key)

    async def _resync(self) -> None:
        """Every period, schedule every resource once at a random point of the next period."""
        period = self.settings.resync_seconds
        while True:
            await asyncio.sleep(period)
            if self.cache is not None:
                for key in self.cache.md_keys():
                    self.queue.add_after(key, random.uniform(0, period))

    async def _reconcile(self, key: Any) -> None:
        if self.controller is not None and self.is_leader():
            await self.controller.reconcile(key)

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "leader": self.is_leader() if self.synced else False,
            "synced": self.synced,
            "queue": self.queue.busy,
            "scheduled": self.queue.scheduled,
            "reconciles": self.queue.done,
            "writes": self.controller.writes if self.controller is not None else 0,
            "requests": dict(self.kube.counts) if self.kube is not None else {},
            "retries": {str(k): v for k, v in self.kube.retried.items()} if self.kube is not None else {},
            "lease_renewals": self.elector.renewals if self.elector is not None else 0,
            "lists": self.cache.lists if self.cache is not None else 0,
            "modeldeployments": len(self.cache.md_keys()) if self.cache is not None else 0,
        }

    async def _serve_health(self) -> None:
        address = self.settings.health_address
        if not address:
            return
        host, _, port = address.rpartition(":")

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
                if path.split(b"?")[0] in (b"/healthz", b"/"):
                    code, body = b"200 OK", json.dumps(self.health()).encode()
                else:
                    code, body = b"404 Not Found", b'{"error": "not found"}'
                writer.write(
                    b"HTTP/1.1 "
                    + code
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
                await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._health = await asyncio.start_server(answer, host or "0.0.0.0", int(port))
