"""The decisions of one reconcile, as pure functions of (resource, saved rollout state, observations, now).

The rollout itself is the core state machine (:mod:`ferryman.rollout`), exactly as ``ferryman up`` runs it;
what is added here is what only a cluster has:

* the state is read back from ``status.rollout`` (an operator restart resumes mid-rollout);
* a *new* rollout (spec edited) starts only once the versions it will route to are ready, so no caller
  is sent to a version whose pods are still starting; until then the previous split keeps serving;
* manual actions arrive as the annotation ``serving.ferryman.dev/action`` (``promote``, ``promote:<arm>``,
  ``rollback``, ``pause``, ``resume``);
* scaling (a version's ``replicas`` or ``resources``) is not a new rollout: :func:`rollout_identity` leaves
  them out, and a saved rollout with the same identity continues (the core's ``spec_hash`` covers them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ferryman import rollout
from ferryman.analysis import Outcome, VersionStats
from ferryman.errors import SpecError
from ferryman.rollout import Phase, RolloutDecision, RolloutState
from ferryman.spec import API_GROUP, ModelDeployment, Strategy, parse_deployment
from ferryman_operator.backends.base import Readiness

log = logging.getLogger("ferryman.operator")

ANNOTATION_ACTION = f"{API_GROUP}/action"
ACTIONS = ("promote", "rollback", "pause", "resume")


@dataclass(frozen=True)
class Problem:
    """Why a resource is Degraded: a CamelCase reason and a message naming what to fix."""

    reason: str
    message: str


@dataclass(frozen=True)
class SpecDecision:
    state: RolloutState
    decisions: tuple[RolloutDecision, ...] = ()
    waiting: str | None = None  # why a new rollout has not started yet


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """The resource as the core's pydantic model; :class:`SpecError` names every invalid field."""
    meta = body.get("metadata") or {}
    data = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta},
        "spec": body.get("spec"),
    }
    return parse_deployment(data, source=f"{meta.get('namespace')}/{meta.get('name')}")


def saved_state(body: Mapping[str, Any]) -> RolloutState | None:
    doc = (body.get("status") or {}).get("rollout")
    if not doc:
        return None
    try:
        return RolloutState.from_dict(doc)
    except (KeyError, TypeError, ValueError) as err:
        log.error(
            "ignoring unreadable status.rollout of %s: %s", (body.get("metadata") or {}).get("name"), err
        )
        return None


def rollout_versions(md: ModelDeployment) -> tuple[str, ...]:
    """The versions a fresh rollout of ``md`` routes traffic (or shadow copies) to."""
    t = md.spec.traffic
    stable = t.stable or md.spec.versions[0].name
    out = [stable]
    if t.strategy == Strategy.ab_test:
        out += [v for v, w in t.ab_test.weights.items() if w > 0]
    elif t.candidate is not None:
        out.append(t.candidate)
    return tuple(dict.fromkeys(out))


def routed_versions(state: RolloutState, md: ModelDeployment) -> tuple[str, ...]:
    """Versions that receive requests under ``state`` (weights > 0, plus the shadow target)."""
    out = [v for v, w in state.weights.items() if w > 0]
    table = rollout.table_for(md, state)
    if table.shadow is not None:
        out.append(table.shadow)
    return tuple(dict.fromkeys(out))


def usable(state: RolloutState, md: ModelDeployment) -> bool:
    """Whether a saved state can still be realised with ``md``'s versions (nothing it routes to vanished)."""
    known = {v.name for v in md.spec.versions}
    return (
        state.stable in known
        and (state.candidate is None or state.candidate in known)
        and set(state.weights) <= known
    )


def rollout_identity(md: ModelDeployment) -> str:
    """What a rollout is about (the core's :func:`ferryman.rollout.rollout_identity`): model files and
    routing. Replicas, resources and analysis settings are not in it, so scaling a version or tuning the
    analysis neither restarts a canary nor undoes a promotion."""
    return rollout.rollout_identity(md)


def decide_spec(
    md: ModelDeployment,
    saved: RolloutState | None,
    *,
    readiness: Readiness,
    now: float,
    saved_identity: str | None = None,
) -> SpecDecision:
    """Resume the saved rollout of this spec, or start the one the spec now describes.

    ``saved_identity`` is the :func:`rollout_identity` stored with ``saved``: when it still matches, only
    replicas or resources changed and the saved rollout continues as it is."""
    if saved is not None and usable(saved, md):
        current = rollout.spec_hash(md)
        if saved.spec_hash == current:
            return SpecDecision(saved)
        if saved_identity is not None and saved_identity == rollout_identity(md):
            return SpecDecision(replace(saved, spec_hash=current))
        unready = readiness.unready(rollout_versions(md))
        if unready:
            return SpecDecision(saved, waiting="the new rollout starts once ready: " + "; ".join(unready))
    state, decision = rollout.reconcile_spec(saved, md, now=now)
    return SpecDecision(state, (decision,) if decision else ())


def analysis_due(state: RolloutState, md: ModelDeployment, *, now: float) -> str | None:
    """The candidate to analyse now (``rollout.tick`` would ask for its stats), or None."""
    if state.phase != Phase.progressing or state.candidate is None:
        return None
    t = md.spec.traffic
    interval = (
        t.canary.interval_seconds
        if state.strategy == Strategy.canary
        else t.blue_green.analysis_interval_seconds
    )
    if now - max(state.step_started_at, state.analyzed_at) < interval:
        return None
    return state.candidate


def analyse(
    state: RolloutState, md: ModelDeployment, *, stats: VersionStats, now: float
) -> tuple[RolloutState, RolloutDecision | None]:
    """One analysis step of the core state machine with the stats fetched for the due candidate."""
    return rollout.tick(state, md, stats=lambda _version: stats, now=now)


def parse_action(value: str | None) -> tuple[str, str | None] | None:
    """``"promote:v2"`` -> ("promote", "v2"); None when there is no action annotation."""
    if not value:
        return None
    action, _, version = value.strip().partition(":")
    return action.strip().lower(), (version.strip() or None)


def apply_action(
    state: RolloutState, action: str, version: str | None, *, now: float, actor: str
) -> tuple[RolloutState, RolloutDecision]:
    """A manual action on the rollout; ``ferryman.errors.Conflict`` when it makes no sense in this phase."""
    reason = f"{action} requested through the {ANNOTATION_ACTION} annotation"
    if action == "promote":
        return rollout.promote(state, now=now, reason=reason, actor=actor, version=version)
    if action == "rollback":
        return rollout.rollback(state, now=now, reason=reason, actor=actor)
    if action == "pause":
        return rollout.pause(state, now=now, reason=reason, actor=actor)
    if action == "resume":
        return rollout.resume(state, now=now, reason=reason, actor=actor)
    raise SpecError(f"{ANNOTATION_ACTION}: unknown action {action!r} (use one of {', '.join(ACTIONS)})")


def event_for(decision: RolloutDecision, state: RolloutState) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event that explains a decision; None for quiet ones (data holds)."""
    weights = ", ".join(f"{v} {w}%" for v, w in decision.weights.items())
    message = f"{decision.reason} [traffic: {weights}]"
    action = decision.action
    if action == rollout.Action.hold:
        analysis = state.last_analysis
        if analysis is not None and analysis.outcome == Outcome.failed:
            return "Warning", "AnalysisFailed", message
        return None
    table = {
        rollout.Action.start: ("Normal", "RolloutStarted"),
        rollout.Action.advance: ("Normal", "StepAdvanced"),
        rollout.Action.promote: ("Normal", "Promoted"),
        rollout.Action.rollback: ("Warning", "RolledBack"),
        rollout.Action.pause: ("Normal", "Paused"),
        rollout.Action.resume: ("Normal", "Resumed"),
    }
    if action not in table:
        return None
    kind, reason = table[action]
    return kind, reason, message
