"""The ``status`` of a ModelDeployment, built from the rollout state and the observations. Pure.

Conditions (Kubernetes conventions: one per type, ``lastTransitionTime`` moves only when ``status`` does):

* ``Ready``: every version that receives traffic, and the gateway/ingress, is ready;
* ``Progressing``: a rollout is under way (canary steps, blue-green preview, A/B test, shadow), or a new
  rollout waits for its versions; False once it is ``Stable``, ``Promoted``, ``RolledBack`` or ``Paused``;
* ``Degraded``: the operator cannot do what the spec asks (invalid spec, model unreachable, a runtime
  that cannot take the spec, an object the apiserver refused) — the reason says which, the message how.

:func:`material` is what decides whether a new status is worth a write: a repeated analysis hold changes
only timestamps and figures (``analyzedAt``, ``lastAnalysis``, the time and counts of the latest hold), which
nobody acts on, so it is not written (the controller keeps that state in memory).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ferryman.rollout import Phase, RolloutState, spec_hash
from ferryman.spec import ModelDeployment, Strategy
from ferryman_operator.backends.base import Readiness
from ferryman_operator.reconcile import Problem, rollout_identity, routed_versions

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
PHASE_DEGRADED = "Degraded"

_ACTIVE_REASON = {
    Strategy.canary: "Canary",
    Strategy.blue_green: "BlueGreen",
    Strategy.ab_test: "ABTest",
    Strategy.shadow: "Shadow",
    Strategy.static: "Static",
}
_DONE_REASON = {
    Phase.stable: "Stable",
    Phase.promoted: "Promoted",
    Phase.rolled_back: "RolledBack",
    Phase.paused: "Paused",
}


def traffic_split(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {w}%" for v, w in weights.items() if w > 0)


def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message[:2000],
    }


def merge_conditions(
    previous: list[dict[str, Any]], new: list[dict[str, str]], *, now: str
) -> list[dict[str, Any]]:
    """``new`` with ``lastTransitionTime`` kept from ``previous`` where the status did not change."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for c in new:
        old = before.get(c["type"])
        stamp = old.get("lastTransitionTime") if old and old.get("status") == c["status"] else None
        out.append({**c, "lastTransitionTime": stamp or now})
    return out


def _progressing(state: RolloutState, waiting: str | None) -> dict[str, str]:
    last = state.history[-1].reason if state.history else ""
    if waiting:
        return condition(PROGRESSING, True, "WaitingForVersions", waiting)
    if state.phase in (Phase.progressing, Phase.running):
        return condition(PROGRESSING, True, _ACTIVE_REASON[state.strategy], last)
    return condition(PROGRESSING, False, _DONE_REASON.get(state.phase, state.phase.value), last)


def build(
    *,
    previous: Mapping[str, Any] | None,
    md: ModelDeployment,
    state: RolloutState,
    readiness: Readiness,
    problem: Problem | None,
    waiting: str | None,
    generation: int | None,
    endpoint: str,
    now: str,
) -> dict[str, Any]:
    """The full status for a resource the operator could read (``problem`` set when it is Degraded)."""
    prev = dict(previous or {})
    if problem is not None:
        ready = condition(READY, False, problem.reason, problem.message)
        degraded = condition(DEGRADED, True, problem.reason, problem.message)
    else:
        unready = readiness.unready(routed_versions(state, md))
        ready = (
            condition(READY, False, "NotReady", "; ".join(unready))
            if unready
            else condition(READY, True, "Ready", f"serving {traffic_split(state.weights)} at {endpoint}")
        )
        degraded = condition(DEGRADED, False, "AsExpected", "")
    conditions = merge_conditions(
        prev.get("conditions") or [], [ready, _progressing(state, waiting), degraded], now=now
    )
    status: dict[str, Any] = {
        "phase": PHASE_DEGRADED if problem is not None else state.phase.value,
        "observedGeneration": generation,
        "weights": dict(state.weights),
        "stable": state.stable,
        "trafficSplit": traffic_split(state.weights),
        "endpoint": endpoint,
        "conditions": conditions,
        "rollout": state.to_dict(iso_times=True),  # RFC 3339 times: readable in kubectl describe
    }
    # the identity of the spec the rollout state belongs to (a new rollout may still wait for its versions)
    identity = rollout_identity(md) if state.spec_hash == spec_hash(md) else prev.get("rolloutIdentity")
    if identity:
        status["rolloutIdentity"] = identity
    if state.candidate is not None:
        status["candidate"] = state.candidate
    if prev.get("lastAction"):
        status["lastAction"] = prev["lastAction"]
    return status


def invalid(
    *, previous: Mapping[str, Any] | None, problem: Problem, generation: int | None, now: str
) -> dict[str, Any]:
    """Status for a spec the operator cannot use: Degraded, and the last good rollout state kept as is
    (fixing the spec resumes from it; nothing that was serving is touched)."""
    prev = dict(previous or {})
    progressing = next((c for c in prev.get("conditions") or [] if c.get("type") == PROGRESSING), None)
    new = [
        condition(READY, False, problem.reason, problem.message),
        {k: progressing[k] for k in ("type", "status", "reason", "message") if k in progressing}
        if progressing
        else condition(PROGRESSING, False, problem.reason, problem.message),
        condition(DEGRADED, True, problem.reason, problem.message),
    ]
    status = {k: v for k, v in prev.items() if k not in ("conditions", "phase", "observedGeneration")}
    status.update(
        phase=PHASE_DEGRADED,
        observedGeneration=generation,
        conditions=merge_conditions(prev.get("conditions") or [], new, now=now),
    )
    return status


def conditions_of(status: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (status or {}).get("conditions") or [] if "type" in c}


def transition_events(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """Events for condition changes worth a line in ``kubectl describe``: became Degraded (or the reason or
    message changed), recovered, became Ready."""
    old, new = conditions_of(before), conditions_of(after)
    events = []
    deg_old, deg_new = old.get(DEGRADED, {}), new.get(DEGRADED, {})
    if deg_new.get("status") == "True":
        if (deg_old.get("status"), deg_old.get("reason"), deg_old.get("message")) != (
            "True",
            deg_new.get("reason"),
            deg_new.get("message"),
        ):
            events.append(("Warning", deg_new.get("reason", DEGRADED), deg_new.get("message", "")))
    elif deg_old.get("status") == "True":
        events.append(("Normal", "Recovered", f"no longer degraded (was {deg_old.get('reason')})"))
    ready_old, ready_new = old.get(READY, {}), new.get(READY, {})
    if ready_new.get("status") == "True" and ready_old.get("status") != "True":
        events.append(("Normal", "Ready", ready_new.get("message", "")))
    return events


_FIGURES = re.compile(r"\d+(\.\d+)?(e-?\d+)?")


def hold_reason(reason: str) -> str:
    """A hold's reason without its figures: "only 12 of 100 requests" and "only 40 of 100 requests" are the
    same reason to wait."""
    return _FIGURES.sub("#", reason)


def material(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status without what a repeated hold changes: when two statuses are materially equal, the write
    is skipped. Phase, conditions, weights, the rollout step, failures and every decision still count."""
    out = dict(status or {})
    rollout = out.get("rollout")
    if isinstance(rollout, dict):
        rollout = {k: v for k, v in rollout.items() if k not in ("analyzedAt", "lastAnalysis")}
        history = list(rollout.get("history") or [])
        if history and isinstance(history[-1], dict) and history[-1].get("action") == "hold":
            last = history[-1]
            history[-1] = {
                "action": "hold",
                "reason": hold_reason(str(last.get("reason", ""))),
                "weights": last.get("weights"),
                "actor": last.get("actor"),
            }
        rollout["history"] = history
        out["rollout"] = rollout
    return out


def only_ready_message(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether the only material difference is the message of a ``Ready`` condition whose status did not
    change (a version going from "0/1 replicas ready" to "rollout not observed yet" and on): progress worth
    showing, but not a write per step."""
    a, b = conditions_of(new).get(READY), conditions_of(old).get(READY)
    if a is None or b is None or a.get("status") != b.get("status") or a.get("message") == b.get("message"):
        return False

    def blank(st: Mapping[str, Any]) -> dict[str, Any]:
        out = material(st)
        out["conditions"] = [
            {**c, "message": ""} if c.get("type") == READY else c for c in out.get("conditions") or []
        ]
        return out

    return blank(new) == blank(old)
