"""One reconcile of one ModelDeployment: read (cache), decide (pure), apply what changed, write what changed.

1. Read the resource from the watch cache; parse it with the core's pydantic spec (once per generation).
   Invalid -> status Degraded/InvalidSpec with the field paths, last good state kept, nothing else touched.
2. Check the runtime can take the spec and the model URIs answer -> else Degraded, serving unchanged.
3. Decide: resume or start the rollout (:mod:`reconcile`), a manual action, and — when an interval is
   due — one analysis with the candidate's stats from Prometheus.
4. Server-side apply only the desired objects that differ from what the cache holds (the hash stamped on
   each object at its last apply, and its generation for edits by others); prune, from the cache, what the
   spec no longer asks for. A prune that fails is retried later; it does not fail the reconcile. A resource
   seen for the first time gets its status first and its objects in its next pass (queued behind the
   others), so a thousand new resources all show a phase quickly.
5. Observe readiness (cache), and write the status only when it changed materially (not for a repeated
   analysis hold: :func:`status.material`), conditional on the ``resourceVersion`` read in step 1. A 409
   means someone else wrote first: read the resource fresh with a GET and start again (optimistic
   concurrency).
6. Post Events for every decision and condition change (a hold: once per new reason), after the write.
7. Schedule the next look: when the next analysis is due, or when a failed prune or model check is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ferryman import rollout
from ferryman.errors import Conflict, SpecError
from ferryman.rollout import Action, RolloutDecision, RolloutState
from ferryman.spec import ModelDeployment
from ferryman_operator import names, reconcile, status
from ferryman_operator.backends.base import Backend, Context, Observed
from ferryman_operator.backends.factory import all_kinds, backend_for
from ferryman_operator.cache import Cache, Key
from ferryman_operator.kube.client import ApiError, KubeClient
from ferryman_operator.kube.informer import newer, resource_version
from ferryman_operator.kube.kinds import MODEL_DEPLOYMENT, kind_of
from ferryman_operator.preflight import Preflight
from ferryman_operator.prometheus import PrometheusStats
from ferryman_operator.reconcile import Problem
from ferryman_operator.settings import Settings

log = logging.getLogger("ferryman.operator")

CONFLICT_RETRIES = 5
PRUNE_RETRY_SECONDS = 5.0
MESSAGE_WRITE_SECONDS = 2.0  # a not-ready message that only counts progress is written at most this often
_HINTS = {
    404: " (is the {kind} CRD ({api}) installed in the cluster?)",
    403: " (the operator's RBAC does not grant it: see operators/ferryman_operator/rbac.yaml)",
}
COMPONENT = "ferryman-operator"
_PRUNABLE = frozenset(k.kind for k in all_kinds())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def edit_marker(obj: dict[str, Any]) -> str:
    """What changes when someone edits an object: its generation where it has one (a Deployment's status
    updates do not move it), else its resourceVersion (ConfigMaps, Services)."""
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    return f"g{generation}" if generation is not None else f"r{meta.get('resourceVersion', '')}"


@dataclass(frozen=True, slots=True)
class Applied:
    """The operator's last write of one object: what it applied, and the object's state right after."""

    digest: str
    marker: str
    resource_version: str


def needs_apply(desired_digest: str, cached: dict[str, Any] | None, record: Applied | None) -> bool:
    """Whether an owned object must be applied: missing, different from what the spec now asks, edited by
    someone else since our last apply, or not yet applied by this process. Pure.

    Without a record (the first look since this process started: a restart, a new leader) the stamp alone
    cannot tell an object edited while no operator ran from an untouched one, so it is applied once; a
    server-side apply that changes nothing is not written to etcd (its resourceVersion stays)."""
    if record is None:
        return True
    if cached is not None and not newer(record.resource_version, resource_version(cached)):
        # the cache is at least as new as our last write
        stamped = ((cached.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_APPLIED)
        if stamped != desired_digest:
            return True
        return edit_marker(cached) != record.marker
    # the watch has not delivered our last write yet
    return record.digest != desired_digest


def next_analysis_in(state: RolloutState, md: ModelDeployment, *, now: float) -> float | None:
    """Seconds until :func:`reconcile.analysis_due` would answer, or None when no analysis is pending."""
    if state.phase != rollout.Phase.progressing or state.candidate is None:
        return None
    t = md.spec.traffic
    interval = (
        t.canary.interval_seconds
        if state.strategy == rollout.Strategy.canary
        else t.blue_green.analysis_interval_seconds
    )
    return max(state.step_started_at, state.analyzed_at) + interval - now


class Controller:
    def __init__(
        self,
        *,
        kube: KubeClient,
        cache: Cache,
        settings: Settings,
        prometheus: PrometheusStats,
        preflight: Preflight,
        is_leader: Callable[[], bool] = lambda: True,
        schedule: Callable[[Key, float], None] = lambda key, delay: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.settings = settings
        self.prometheus = prometheus
        self.preflight = preflight
        self.is_leader = is_leader
        self.schedule = schedule
        self.clock = clock
        self._parsed: dict[Key, tuple[tuple[Any, ...], ModelDeployment | SpecError]] = {}
        self._desired: dict[Key, tuple[tuple[Any, ...], list[tuple[str, str, str]]]] = {}
        self._applied: dict[Key, dict[tuple[str, str], Applied]] = {}  # (kind, name) -> our last apply
        self._held: dict[Key, tuple[Any, RolloutState]] = {}  # state not written (repeated holds)
        self._hold: dict[Key, tuple[str, int]] = {}  # (reason without figures, holds in a row)
        self._written_at: dict[Key, float] = {}  # monotonic time of the last status write
        self.writes = 0  # status writes, applies, deletes, events (for the health endpoint)

    def forget(self, key: Key) -> None:
        self._parsed.pop(key, None)
        self._desired.pop(key, None)
        self._applied.pop(key, None)
        self._held.pop(key, None)
        self._hold.pop(key, None)
        self._written_at.pop(key, None)

    def deleted(self, key: Key, kind: str, name: str) -> None:
        """An owned object is gone (its watch said so): the next pass applies it again if still desired."""
        self._applied.get(key, {}).pop((kind, name), None)

    async def reconcile(self, key: Key) -> None:
        fresh = False
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                await self._once(key, fresh=fresh)
                return
            except ApiError as err:
                if not err.conflict:
                    raise
                log.info("%s/%s: conflict (%s), reading it again (attempt %d)", *key, err.message, attempt)
                fresh = True
        log.warning("%s/%s: gave up after %d conflicting writes; retrying later", *key, CONFLICT_RETRIES)
        raise ApiError(409, "Conflict", f"{CONFLICT_RETRIES} conflicting writes in a row")

    # -- one pass -------------------------------------------------------------------------------------
    async def _read(self, key: Key, *, fresh: bool) -> dict[str, Any] | None:
        if not fresh:
            return self.cache.md(key)
        body = await self.kube.get(MODEL_DEPLOYMENT, *key)  # a write is about to depend on it
        if body is not None:
            body.setdefault("apiVersion", MODEL_DEPLOYMENT.api_version)
            body.setdefault("kind", MODEL_DEPLOYMENT.kind)
            self.cache.remember_md(body)
        return body

    def _parse(self, key: Key, body: dict[str, Any]) -> ModelDeployment:
        meta = body["metadata"]
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k != reconcile.ANNOTATION_ACTION
        }
        token = (meta.get("uid"), meta.get("generation"), digest([meta.get("labels"), annotations]))
        cached = self._parsed.get(key)
        if cached is None or cached[0] != token:
            try:
                result: ModelDeployment | SpecError = reconcile.parse(body)
            except SpecError as err:
                result = err
            cached = self._parsed[key] = (token, result)
        if isinstance(cached[1], SpecError):
            raise cached[1]
        return cached[1]

    async def _once(self, key: Key, *, fresh: bool) -> None:
        namespace = key[0]
        body = await self._read(key, fresh=fresh)
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
            md = self._parse(key, body)
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
            self.schedule(key, max(self.preflight.ttl, 1.0))  # look again once the check result expires
            return

        held = self._held.get(key)
        saved = (
            held[1]
            if held is not None and held[0] == previous.get("rollout")
            else reconcile.saved_state(body)
        )
        readiness = backend.readiness(md, self._observe(key, backend, md))
        spec_decision = reconcile.decide_spec(
            md, saved, readiness=readiness, now=now, saved_identity=previous.get("rolloutIdentity")
        )
        state = spec_decision.state
        decisions: list[RolloutDecision] = list(spec_decision.decisions)
        extra_events: list[tuple[str, str, str]] = []
        last_action: dict[str, Any] | None = None

        requested = reconcile.parse_action(
            (body["metadata"].get("annotations") or {}).get(reconcile.ANNOTATION_ACTION)
        )
        if requested is not None:
            action, version = requested
            try:
                state, decision = reconcile.apply_action(
                    state, action, version, now=now, actor=f"annotation:{reconcile.ANNOTATION_ACTION}"
                )
                decisions.append(decision)
                last_action = {"action": action, "version": version, "at": iso(now), "result": "applied"}
            except (Conflict, SpecError) as err:
                last_action = {
                    "action": action,
                    "version": version,
                    "at": iso(now),
                    "result": f"rejected: {err}",
                }
                extra_events.append(("Warning", "ActionRejected", f"{action}: {err}"))

        due = reconcile.analysis_due(state, md, now=now)
        if due is not None:
            stats = await self.prometheus.stats(
                model=md.name, version=due, namespace=namespace, window_seconds=now - state.step_started_at
            )
            state, analysed = reconcile.analyse(state, md, stats=stats, now=now)
            if analysed is not None:
                decisions.append(analysed)

        # A resource seen for the first time gets its status (phase, weights, NotReady) before anything is
        # applied, and goes to the back of the queue: with many new resources at once, every one shows its
        # phase after one write each, instead of after every object of those ahead of it.
        first = not previous
        applied_problem, applied = None, False
        if not first:
            ctx = Context(
                md=md,
                namespace=namespace,
                owner=names.owner_reference(body),
                state=state,
                table=rollout.table_for(md, state),
                settings=self.settings,
            )
            applied_problem, applied = await self._apply(key, backend, ctx, body=body)
        if applied:
            readiness = backend.readiness(md, self._observe(key, backend, md))
        new_status = status.build(
            previous=previous,
            md=md,
            state=state,
            readiness=readiness,
            problem=applied_problem,
            waiting=spec_decision.waiting,
            generation=generation,
            endpoint=backend.endpoint(md, namespace),
            now=iso(now),
        )
        if last_action is not None:
            new_status["lastAction"] = last_action
        changed = status.material(new_status) != status.material(previous)
        if (
            changed
            and not decisions
            and last_action is None
            and status.only_ready_message(new_status, previous)
        ):
            # progress while not ready ("0/1 replicas ready" -> ...): at most one write per resource every
            # MESSAGE_WRITE_SECONDS; becoming Ready is a change of status and is written at once
            hold_off = (
                self._written_at.get(key, -MESSAGE_WRITE_SECONDS) + MESSAGE_WRITE_SECONDS - time.monotonic()
            )
            if hold_off > 0:
                self.schedule(key, hold_off)
                return
        if changed:
            if not self.is_leader():
                return
            self._written_at[key] = time.monotonic()
            body = await self.kube.replace_status({**body, "status": new_status})
            self.writes += 1
            self.cache.remember_md(body)
            self._held.pop(key, None)
        elif new_status != previous:
            self._held[key] = (previous.get("rollout"), state)  # a repeated hold: kept here, not written
        events = self._decision_events(key, decisions, state)
        events += extra_events + status.transition_events(previous, new_status)
        await self._events(body, events, now=now)
        if requested is not None:
            await self._clear_action(key)
        if first:
            self.schedule(key, 0.0)  # now the objects
            return
        wait = next_analysis_in(state, md, now=now)
        if wait is not None:
            self.schedule(key, max(wait, 0.0) + 0.05)

    def _decision_events(
        self, key: Key, decisions: list[RolloutDecision], state: RolloutState
    ) -> list[tuple[str, str, str]]:
        """Log and explain decisions. Holds: one Event and one log line when the reason changes (a run of
        identical holds is counted, not repeated)."""
        namespace, name = key
        out: list[tuple[str, str, str]] = []
        for decision in decisions:
            if decision.action == Action.hold:
                reason = status.hold_reason(decision.reason)
                before, count = self._hold.get(key, ("", 0))
                failed = reconcile.event_for(decision, state)  # a failed analysis: always explained
                if reason == before and failed is None:
                    self._hold[key] = (reason, count + 1)
                    log.debug("%s/%s: hold #%d (%s)", namespace, name, count + 1, decision.reason)
                    continue
                self._hold[key] = (reason, 1)
                log.info(
                    "%s/%s: hold (%s)%s",
                    namespace,
                    name,
                    decision.reason,
                    f" after {count} holds for another reason" if count and reason != before else "",
                )
                out.append(failed or ("Normal", "AnalysisHold", decision.reason))
                continue
            self._hold.pop(key, None)
            log.info(
                "%s/%s: %s -> %s (%s)",
                namespace,
                name,
                decision.action.value,
                decision.weights,
                decision.reason,
            )
            event = reconcile.event_for(decision, state)
            if event is not None:
                out.append(event)
        return out

    # -- effects --------------------------------------------------------------------------------------
    def _observe(self, key: Key, backend: Backend, md: ModelDeployment) -> Observed:
        owned = self.cache.owned(key)
        return {
            (kind.kind, obj_name): owned.get((kind.kind, obj_name)) for kind, obj_name in backend.watched(md)
        }

    def _build(self, backend: Backend, ctx: Context) -> list[dict[str, Any]]:
        """The desired objects, each stamped with the hash of what it is (``names.ANNOTATION_APPLIED``)."""
        objects = []
        for obj in backend.desired(ctx):
            meta = obj["metadata"]
            objects.append(
                {
                    **obj,
                    "metadata": {
                        **meta,
                        "annotations": {
                            **(meta.get("annotations") or {}),
                            names.ANNOTATION_APPLIED: digest(obj),
                        },
                    },
                }
            )
        return objects

    def _desired_stamps(
        self, key: Key, backend: Backend, ctx: Context, body: dict[str, Any]
    ) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]] | None]:
        """(kind, name, stamp) of every desired object, and the objects when they had to be built now. Only
        the stamps are kept between passes (the objects are most of the memory at a thousand resources)."""
        token = (
            body["metadata"].get("uid"),
            body["metadata"].get("generation"),
            repr(ctx.table),
            ctx.state.phase,
            backend.name,
            id(self.settings),
        )
        cached = self._desired.get(key)
        if cached is not None and cached[0] == token:
            return cached[1], None
        objects = self._build(backend, ctx)
        stamps = [
            (o["kind"], o["metadata"]["name"], o["metadata"]["annotations"][names.ANNOTATION_APPLIED])
            for o in objects
        ]
        self._desired[key] = (token, stamps)
        return stamps, objects

    async def _apply(
        self, key: Key, backend: Backend, ctx: Context, *, body: dict[str, Any]
    ) -> tuple[Problem | None, bool]:
        """Apply the desired objects that differ from the cached ones; prune the ones no longer desired.
        Returns (problem, whether anything was written)."""
        stamps, objects = self._desired_stamps(key, backend, ctx, body)
        owned = self.cache.owned(key)
        records = self._applied.setdefault(key, {})
        stale = {
            (kind, name)
            for kind, name, stamp in stamps
            if needs_apply(stamp, owned.get((kind, name)), records.get((kind, name)))
        }
        if stale and objects is None:
            objects = self._build(backend, ctx)
        wanted = [o for o in objects or [] if (o["kind"], o["metadata"]["name"]) in stale]
        if wanted and not self.is_leader():
            return None, False
        # independent objects: sent together (the apiserver, not this loop, is what they wait for)
        results = await asyncio.gather(*(self.kube.apply(obj) for obj in wanted), return_exceptions=True)
        problem: Problem | None = None
        for obj, result in zip(wanted, results, strict=True):
            kind, obj_name = obj["kind"], obj["metadata"]["name"]
            if isinstance(result, ApiError):
                if result.conflict:
                    raise result
                what = f"{kind} {obj_name}"
                log.error("%s/%s: apply %s failed: %s", *key, what, result)
                hint = _HINTS.get(result.status, "").format(kind=kind, api=obj["apiVersion"])
                problem = problem or Problem(
                    "ApplyFailed",
                    f"{what}: the apiserver refused it: {result.status} "
                    f"{result.reason}: {result.message}{hint}",
                )
                continue
            if isinstance(result, BaseException):
                raise result
            self.writes += 1
            result.setdefault("apiVersion", obj["apiVersion"])
            result.setdefault("kind", kind)
            records[(kind, obj_name)] = Applied(
                obj["metadata"]["annotations"][names.ANNOTATION_APPLIED],
                edit_marker(result),
                resource_version(result),
            )
            self.cache.remember_owned(result)
        if problem is not None:
            return problem, True
        wrote = bool(wanted)
        if await self._prune(
            key, {(kind, name) for kind, name, _stamp in stamps}, uid=body["metadata"]["uid"]
        ):
            wrote = True
        return None, wrote

    async def _prune(self, key: Key, desired: set[tuple[str, str]], *, uid: str) -> bool:
        """Delete cached objects this ModelDeployment owns that the spec no longer asks for (a removed
        version, every object of the previous runtime after a runtime switch). A delete that fails (after
        the client's own retries) is logged and tried again in a few seconds; the reconcile goes on."""
        namespace, name = key
        deleted = False
        for (kind_name, obj_name), obj in list(self.cache.owned(key).items()):
            meta = obj["metadata"]
            if (
                kind_name not in _PRUNABLE
                or (kind_name, obj_name) in desired
                or meta.get("deletionTimestamp")
            ):
                continue
            if not any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
                continue
            log.info("%s/%s: deleting %s %s (no longer in the spec)", namespace, name, kind_name, obj_name)
            try:
                await self.kube.delete(kind_of(obj), namespace, obj_name, uid=meta.get("uid"))
            except ApiError as err:
                log.warning(
                    "%s/%s: could not delete %s %s (%s); trying again in %.0fs",
                    namespace,
                    name,
                    kind_name,
                    obj_name,
                    err,
                    PRUNE_RETRY_SECONDS,
                )
                self.schedule(key, PRUNE_RETRY_SECONDS)
                continue
            self.writes += 1
            self._applied.get(key, {}).pop((kind_name, obj_name), None)
            deleted = True
        return deleted

    async def _degraded(
        self, body: dict[str, Any], problem: Problem, *, generation: int | None, now: float
    ) -> None:
        previous = body.get("status") or {}
        new_status = status.invalid(previous=previous, problem=problem, generation=generation, now=iso(now))
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if new_status != previous:
            log.warning("%s/%s: degraded: %s: %s", namespace, name, problem.reason, problem.message)
            body = await self.kube.replace_status({**body, "status": new_status})
            self.writes += 1
            self.cache.remember_md(body)
        await self._events(body, status.transition_events(previous, new_status), now=now)

    async def _events(self, body: dict[str, Any], events: list[tuple[str, str, str]], *, now: float) -> None:
        meta = body["metadata"]
        for kind, reason, message in events:
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": body["apiVersion"],
                    "kind": body["kind"],
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion"),
                },
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
                self.writes += 1
            except ApiError as err:  # events are best effort: never fail a reconcile over them
                log.warning(
                    "%s/%s: could not post event %s: %s", meta["namespace"], meta["name"], reason, err
                )

    async def _clear_action(self, key: Key) -> None:
        try:
            body = await self.kube.merge_patch(
                MODEL_DEPLOYMENT,
                key[0],
                key[1],
                {"metadata": {"annotations": {reconcile.ANNOTATION_ACTION: None}}},
            )
            self.writes += 1
            self.cache.remember_md(body)
        except ApiError as err:
            log.warning(
                "%s/%s: could not remove the %s annotation: %s", *key, reconcile.ANNOTATION_ACTION, err
            )
