"""One reconcile of one ModelDeployment: read, decide (pure), apply, observe, write status, explain.

1. Read the resource; parse it with the core's pydantic spec. Invalid -> status Degraded/InvalidSpec with
   the field paths, last good state kept, nothing else touched, no retry storm (the next change or resync
   looks again).
2. Check the runtime can take the spec and the model URIs answer -> else Degraded, serving unchanged.
3. Decide: resume or start the rollout (:mod:`reconcile`), a manual action, and — when an interval is
   due — one analysis with the candidate's stats from Prometheus.
4. Server-side apply every desired object (idempotent), prune what the spec no longer asks for.
5. Observe readiness, write the status with the ``resourceVersion`` read in step 1. A 409 means someone
   else wrote first: start again from step 1 with fresh data (optimistic concurrency).
6. Post Events for every decision and condition change, only after the status write succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ferryman import rollout
from ferryman.errors import Conflict, SpecError
from ferryman.rollout import Decision
from ferryman_operator import names, reconcile, status
from ferryman_operator.backends.base import Backend, Context, Observed
from ferryman_operator.backends.factory import all_kinds, backend_for
from ferryman_operator.kube.client import MODEL_DEPLOYMENT, ApiError, KubeClient
from ferryman_operator.preflight import Preflight
from ferryman_operator.prometheus import PrometheusStats
from ferryman_operator.reconcile import Problem
from ferryman_operator.settings import Settings

log = logging.getLogger("ferryman.operator")

Key = tuple[str, str]  # (namespace, name)
CONFLICT_RETRIES = 5
_HINTS = {
    404: " (is the {kind} CRD ({api}) installed in the cluster?)",
    403: " (the operator's RBAC does not grant it: see operators/ferryman_operator/rbac.yaml)",
}
COMPONENT = "ferryman-operator"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    def __init__(self, *, kube: KubeClient, settings: Settings, prometheus: PrometheusStats, preflight: Preflight,
                 is_leader: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.settings = settings
        self.prometheus = prometheus
        self.preflight = preflight
        self.is_leader = is_leader
        self.clock = clock
        self._applied: dict[Key, tuple[str, float]] = {}  # digest of the objects last applied, when
        self._pruned: dict[Key, frozenset[tuple[str, str]]] = {}  # desired set last pruned against

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)
        self._pruned.pop(key, None)

    async def reconcile(self, key: Key) -> None:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                await self._once(key)
                return
            except ApiError as err:
                if not err.conflict:
                    raise
                log.info("%s/%s: conflict (%s), re-reading (attempt %d)", *key, err.message, attempt)
        log.warning("%s/%s: gave up after %d conflicting writes; the next resync retries", *key, CONFLICT_RETRIES)

    # -- one pass -------------------------------------------------------------------------------------
    async def _once(self, key: Key) -> None:
        namespace, name = key
        body = await self.kube.get(MODEL_DEPLOYMENT, namespace, name)
        if body is None:
            self.forget(key)
            return
        if body["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the owned objects
        if not self.is_leader():
            return
        now = self.clock()
        generation = body["metadata"].get("generation")
        previous = body.get("status") or {}
        try:
            md = reconcile.parse(body)
        except SpecError as err:
            await self._degraded(body, Problem("InvalidSpec", str(err)), generation=generation, now=now)
            return
        backend = backend_for(md.spec.runtime)
        unsupported = backend.validate(md, self.settings)
        if unsupported:
            problem = Problem("UnsupportedSpec", f"runtime {backend.name}: " + "; ".join(unsupported))
            await self._degraded(body, problem, generation=generation, now=now)
            return
        unreachable = await self.preflight.problems(md)
        if unreachable:
            problem = Problem("ModelUnreachable", "; ".join(unreachable) + " (serving unchanged)")
            await self._degraded(body, problem, generation=generation, now=now)
            return

        saved = reconcile.saved_state(body)
        observed = await self._observe(backend, md, namespace)
        readiness = backend.readiness(md, observed)
        spec_decision = reconcile.decide_spec(md, saved, readiness=readiness, now=now,
                                              saved_identity=previous.get("rolloutIdentity"))
        state = spec_decision.state
        decisions: list[Decision] = list(spec_decision.decisions)
        extra_events: list[tuple[str, str, str]] = []
        last_action: dict[str, Any] | None = None

        requested = reconcile.parse_action((body["metadata"].get("annotations") or {}).get(reconcile.ANNOTATION_ACTION))
        if requested is not None:
            action, version = requested
            try:
                state, decision = reconcile.apply_action(state, action, version, now=now,
                                                         actor=f"annotation:{reconcile.ANNOTATION_ACTION}")
                decisions.append(decision)
                last_action = {"action": action, "version": version, "at": iso(now), "result": "applied"}
            except (Conflict, SpecError) as err:
                last_action = {"action": action, "version": version, "at": iso(now), "result": f"rejected: {err}"}
                extra_events.append(("Warning", "ActionRejected", f"{action}: {err}"))

        due = reconcile.analysis_due(state, md, now=now)
        if due is not None:
            stats = await self.prometheus.stats(model=md.name, version=due, namespace=namespace,
                                                window_seconds=now - state.step_started_at)
            state, analysed = reconcile.analyse(state, md, stats=stats, now=now)
            if analysed is not None:
                decisions.append(analysed)

        ctx = Context(md=md, namespace=namespace, owner=names.owner_reference(body), state=state,
                      table=rollout.table_for(md, state), settings=self.settings)
        applied_problem, applied = await self._apply(key, backend, ctx, uid=body["metadata"]["uid"],
                                             missing=any(o is None for o in observed.values()))
        if applied:
            readiness = backend.readiness(md, await self._observe(backend, md, namespace))
        new_status = status.build(previous=previous, md=md, state=state, readiness=readiness, problem=applied_problem,
                                  waiting=spec_decision.waiting, generation=generation,
                                  endpoint=backend.endpoint(md, namespace), now=iso(now))
        if last_action is not None:
            new_status["lastAction"] = last_action
        if new_status != previous:
            if not self.is_leader():
                return
            body = await self.kube.replace_status({**body, "status": new_status})
        for decision in decisions:
            log.info("%s/%s: %s -> %s (%s)", namespace, name, decision.action.value, decision.weights, decision.reason)
        events = [e for d in decisions if (e := reconcile.event_for(d, state)) is not None]
        events += extra_events + status.transition_events(previous, new_status)
        await self._events(body, events, now=now)
        if requested is not None:
            await self._clear_action(key)

    # -- effects --------------------------------------------------------------------------------------
    async def _observe(self, backend: Backend, md: Any, namespace: str) -> Observed:
        observed: dict[tuple[str, str], dict[str, Any] | None] = {}
        for kind, obj_name in backend.watched(md):
            try:
                observed[(kind.kind, obj_name)] = await self.kube.get(kind, namespace, obj_name)
            except ApiError as err:
                log.warning("%s/%s: cannot read %s %s: %s", namespace, md.name, kind.kind, obj_name, err)
                observed[(kind.kind, obj_name)] = None
        return observed

    async def _apply(self, key: Key, backend: Backend, ctx: Context, *, uid: str,
                     missing: bool) -> tuple[Problem | None, bool]:
        """Apply the desired objects unless exactly these were applied recently and none went missing.
        Returns (problem, whether anything was applied)."""
        objects = backend.desired(ctx)
        digest = hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()
        last = self._applied.get(key)
        fresh = last is not None and time.monotonic() - last[1] < self.settings.reapply_seconds
        if not missing and fresh and last is not None and last[0] == digest:
            return None, False
        self._applied.pop(key, None)
        for obj in objects:
            try:
                await self.kube.apply(obj)
            except ApiError as err:
                if err.conflict:
                    raise
                what = f"{obj['kind']} {obj['metadata']['name']}"
                log.error("%s/%s: apply %s failed: %s", *key, what, err)
                hint = _HINTS.get(err.status, "").format(kind=obj["kind"], api=obj["apiVersion"])
                return Problem("ApplyFailed", f"{what}: the apiserver refused it: {err.status} {err.reason}: "
                                              f"{err.message}{hint}"), True
        desired = frozenset((o["kind"], o["metadata"]["name"]) for o in objects)
        if self._pruned.get(key) != desired:
            await self._prune(key, desired, uid=uid)
            self._pruned[key] = desired
        self._applied[key] = (digest, time.monotonic())
        return None, True

    async def _prune(self, key: Key, desired: frozenset[tuple[str, str]], *, uid: str) -> None:
        """Delete objects this ModelDeployment owns that the spec no longer asks for (e.g. a removed version,
        or every object of the previous runtime after a runtime switch)."""
        namespace, name = key
        for kind in all_kinds():
            try:
                items = await self.kube.list(kind, namespace, label_selector=names.selector(name))
            except ApiError as err:
                if err.status in (403, 404):  # kind not installed (no KubeRay/KServe CRD) or not granted
                    continue
                raise
            for item in items:
                meta = item["metadata"]
                owned = any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
                if owned and (kind.kind, meta["name"]) not in desired:
                    log.info("%s/%s: deleting %s %s (no longer in the spec)", namespace, name, kind.kind, meta["name"])
                    await self.kube.delete(kind, namespace, meta["name"], uid=meta.get("uid"))

    async def _degraded(self, body: dict[str, Any], problem: Problem, *, generation: int | None, now: float) -> None:
        previous = body.get("status") or {}
        new_status = status.invalid(previous=previous, problem=problem, generation=generation, now=iso(now))
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if new_status != previous:
            log.warning("%s/%s: degraded: %s: %s", namespace, name, problem.reason, problem.message)
            body = await self.kube.replace_status({**body, "status": new_status})
        await self._events(body, status.transition_events(previous, new_status), now=now)

    async def _events(self, body: dict[str, Any], events: list[tuple[str, str, str]], *, now: float) -> None:
        meta = body["metadata"]
        for kind, reason, message in events:
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"],
                                   "resourceVersion": meta.get("resourceVersion")},
                "type": kind,
                "reason": reason,
                "message": message[:1000],
                "firstTimestamp": iso(now),
                "lastTimestamp": iso(now),
                "count": 1,
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.settings.identity[:128],
            }
            try:
                await self.kube.create(event)
            except ApiError as err:  # events are best effort: never fail a reconcile over them
                log.warning("%s/%s: could not post event %s: %s", meta["namespace"], meta["name"], reason, err)

    async def _clear_action(self, key: Key) -> None:
        try:
            await self.kube.merge_patch(MODEL_DEPLOYMENT, key[0], key[1],
                                        {"metadata": {"annotations": {reconcile.ANNOTATION_ACTION: None}}})
        except ApiError as err:
            log.warning("%s/%s: could not remove the %s annotation: %s", *key, reconcile.ANNOTATION_ACTION, err)

