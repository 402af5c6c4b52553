"""The kopf wiring: watch ModelDeployments, reconcile them level-based, elect a leader, report health.

kopf runs the watch streams (with reconnects), the operator's life cycle and the liveness endpoint. The
reconciles themselves run from a keyed work queue (:mod:`workqueue`), fed by

* watch events that change ``metadata.generation`` (spec edits) or carry an action annotation, and
* a resync timer (FERRYMAN_RESYNC_SECONDS) that enqueues every known resource: readiness of the workloads,
  rollout analysis intervals and model URI re-checks are all picked up there.

Deliberately no kopf change handlers, timers or daemons: those need kopf's finalizers and annotations on
every resource, and a finalizer would block ``kubectl delete`` whenever the operator is down. Without
them, deletion is plain Kubernetes garbage collection through owner references.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from ferryman.spec import API_GROUP
from ferryman_operator.controller import Controller, Key
from ferryman_operator.kube.client import KubeClient
from ferryman_operator.kube.config import connection_info
from ferryman_operator.leader import LeaderElector
from ferryman_operator.preflight import Preflight
from ferryman_operator.prometheus import PrometheusStats
from ferryman_operator.reconcile import ANNOTATION_ACTION
from ferryman_operator.settings import Settings
from ferryman_operator.workqueue import WorkQueue

log = logging.getLogger("ferryman.operator")

VERSION = "v1alpha1"
PLURAL = "modeldeployments"


class Operator:
    """Everything one operator process runs besides kopf itself."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.known: dict[Key, int | None] = {}  # key -> last seen metadata.generation
        self.kube: KubeClient | None = None
        self.controller: Controller | None = None
        self.elector: LeaderElector | None = None
        self.queue = WorkQueue(self._reconcile)
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.kube = KubeClient()
        self.controller = Controller(
            kube=self.kube, settings=s, is_leader=self.is_leader,
            prometheus=PrometheusStats(s.prometheus_url, namespace_label=s.prometheus_namespace_label,
                                       extra_selector=s.analysis_selector),
            preflight=Preflight(enabled=s.preflight, ttl=s.preflight_ttl_seconds))
        self.queue.start()
        if s.leader_election:
            self.elector = LeaderElector(self.kube, name=s.lease_name, namespace=s.lease_namespace,
                                         identity=s.identity, lease_seconds=s.lease_seconds,
                                         on_change=self._leadership)
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader-election"))
            log.warning("%s: standing by until it holds the lease %s/%s", s.identity, s.lease_namespace, s.lease_name)
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))
        log.warning("ferryman operator %s started: namespaces=%s, resync every %ss, prometheus=%s", s.identity,
                    ",".join(s.namespaces) or "<all>", s.resync_seconds, s.prometheus_url or "<none>")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.stop()
        if self.elector is not None:
            await self.elector.release()
        if self.kube is not None:
            await self.kube.close()

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    # -- inputs ---------------------------------------------------------------------------------------
    def observe(self, event_type: str | None, body: Any) -> None:
        meta = body.get("metadata") or {}
        key: Key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.known.pop(key, None)
            if self.controller is not None:
                self.controller.forget(key)
            return
        generation = meta.get("generation")
        changed = self.known.get(key, -1) != generation
        self.known[key] = generation
        if changed or ANNOTATION_ACTION in (meta.get("annotations") or {}):
            self.queue.add(key)

    def _leadership(self, leader: bool) -> None:
        if leader:
            for key in list(self.known):
                self.queue.add(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for key in list(self.known):
                self.queue.add(key)

    async def _reconcile(self, key: Any) -> None:
        if self.controller is not None and self.is_leader():
            await self.controller.reconcile(key)


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    @kopf.on.login(id="credentials", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info()

    @kopf.on.startup(id="start", registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the controller, one per decision
        settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching: least privilege
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        await operator.start()

    @kopf.on.cleanup(id="stop", registry=registry)
    async def cleanup(**_: Any) -> None:
        with contextlib.suppress(Exception):
            await operator.stop()

    @kopf.on.probe(id="leader", registry=registry)
    def leader(**_: Any) -> bool:
        return operator.is_leader()

    @kopf.on.probe(id="queue", registry=registry)
    def queue(**_: Any) -> int:
        return operator.queue.busy

    @kopf.on.event(API_GROUP, VERSION, PLURAL, id="observe", registry=registry)
    async def watched(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        operator.observe(event.get("type"), body)
