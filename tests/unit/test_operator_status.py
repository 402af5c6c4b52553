"""The ModelDeployment status (ferryman_operator.status): conditions Ready/Progressing/Degraded, phase, the
traffic split, lastTransitionTime semantics, and the Events for condition changes."""

from __future__ import annotations

from typing import Any

from ferryman import rollout
from ferryman.spec import ModelDeployment
from ferryman_operator import status
from ferryman_operator.backends.base import Readiness
from ferryman_operator.reconcile import Problem

ENDPOINT = "http://m.ns.svc.cluster.local:8080"


def md(traffic: dict[str, Any] | None = None) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "m"},
            "spec": {
                "versions": [{"name": "v1", "uri": "s3://b/1"}, {"name": "v2", "uri": "s3://b/2"}],
                "traffic": traffic or {"strategy": "canary", "candidate": "v2"},
            },
        }
    )


def ready(*versions: str, gateway: bool = True) -> Readiness:
    return Readiness(
        versions={
            v: (v in versions, f"version {v}: {'1/1' if v in versions else '0/1'} replicas ready")
            for v in ("v1", "v2")
        },
        frontend=(gateway, "gateway: 1/1" if gateway else "gateway: 0/1 replicas ready"),
    )


def conds(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in s["conditions"]}


def build(
    previous: dict[str, Any] | None,
    readiness: Readiness,
    *,
    problem: Problem | None = None,
    waiting: str | None = None,
    now: str = "2026-01-01T00:00:00Z",
    m: ModelDeployment | None = None,
    state: rollout.RolloutState | None = None,
) -> dict[str, Any]:
    m = m or md()
    state = state or rollout.start(m, now=0.0)[0]
    return status.build(
        previous=previous,
        md=m,
        state=state,
        readiness=readiness,
        problem=problem,
        waiting=waiting,
        generation=4,
        endpoint=ENDPOINT,
        now=now,
    )


def test_ready_canary() -> None:
    s = build(None, ready("v1", "v2"))
    assert s["phase"] == "Progressing"
    assert s["weights"] == {"v1": 95, "v2": 5} and s["trafficSplit"] == "v1 95%, v2 5%"
    assert s["stable"] == "v1" and s["candidate"] == "v2" and s["observedGeneration"] == 4
    assert s["endpoint"] == ENDPOINT and s["rollout"]["phase"] == "Progressing"
    c = conds(s)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Ready")
    assert c["Ready"]["message"] == f"serving v1 95%, v2 5% at {ENDPOINT}"
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "Canary")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("False", "AsExpected")


def test_not_ready_names_what_is_missing() -> None:
    c = conds(build(None, ready("v1", gateway=False)))
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "NotReady"
    assert c["Ready"]["message"] == "version v2: 0/1 replicas ready; gateway: 0/1 replicas ready"


def test_versions_without_traffic_do_not_block_ready() -> None:
    m = md({"strategy": "static"})
    assert conds(build(None, ready("v1"), m=m))["Ready"]["status"] == "True"


def test_shadow_target_counts_for_ready() -> None:
    m = md({"strategy": "shadow", "candidate": "v2"})
    assert conds(build(None, ready("v1"), m=m))["Ready"]["status"] == "False"


def test_transition_time_moves_only_with_the_status() -> None:
    first = build(None, ready("v1"), now="2026-01-01T00:00:00Z")
    same = build(first, ready("v1"), now="2026-01-01T00:05:00Z")
    assert same == first
    flipped = build(first, ready("v1", "v2"), now="2026-01-01T00:09:00Z")
    assert conds(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert conds(flipped)["Progressing"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_waiting_and_finished_rollouts() -> None:
    c = conds(build(None, ready("v1"), waiting="the new rollout starts once ready: version v2: 0/1"))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "WaitingForVersions")
    m = md()
    promoted, _ = rollout.promote(rollout.start(m, now=0.0)[0], now=1.0)
    s = build(None, ready("v1", "v2"), state=promoted)
    assert s["phase"] == "Promoted" and "candidate" not in s and s["stable"] == "v2"
    assert (conds(s)["Progressing"]["status"], conds(s)["Progressing"]["reason"]) == ("False", "Promoted")


def test_problem_degrades_but_keeps_the_state() -> None:
    s = build(None, ready("v1", "v2"), problem=Problem("ApplyFailed", "Deployment m-v1: refused"))
    assert s["phase"] == "Degraded" and s["weights"] == {"v1": 95, "v2": 5}
    c = conds(s)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"], c["Degraded"]["message"]) == (
        "True",
        "ApplyFailed",
        "Deployment m-v1: refused",
    )
    assert c["Ready"]["status"] == "False"


def test_invalid_spec_keeps_the_last_good_status() -> None:
    good = build(None, ready("v1", "v2"))
    bad = status.invalid(
        previous=good, problem=Problem("InvalidSpec", "spec.x: bad"), generation=5, now="2026-01-02T00:00:00Z"
    )
    assert bad["phase"] == "Degraded" and bad["observedGeneration"] == 5
    assert bad["rollout"] == good["rollout"] and bad["weights"] == good["weights"]
    c = conds(bad)
    assert c["Degraded"]["message"] == "spec.x: bad" and c["Ready"]["reason"] == "InvalidSpec"
    assert c["Progressing"] == conds(good)["Progressing"]
    fresh = status.invalid(
        previous=None, problem=Problem("InvalidSpec", "spec.x: bad"), generation=1, now="t"
    )
    assert set(conds(fresh)) == {"Ready", "Progressing", "Degraded"}


def test_transition_events() -> None:
    good = build(None, ready("v1", "v2"))
    assert status.transition_events(None, good) == [
        ("Normal", "Ready", f"serving v1 95%, v2 5% at {ENDPOINT}")
    ]
    assert status.transition_events(good, good) == []
    bad = status.invalid(
        previous=good, problem=Problem("ModelUnreachable", "v2 unreachable"), generation=5, now="t"
    )
    assert status.transition_events(good, bad) == [("Warning", "ModelUnreachable", "v2 unreachable")]
    assert status.transition_events(bad, bad) == []
    worse = status.invalid(
        previous=bad, problem=Problem("ModelUnreachable", "v1 and v2 unreachable"), generation=5, now="t"
    )
    assert status.transition_events(bad, worse) == [("Warning", "ModelUnreachable", "v1 and v2 unreachable")]
    recovered = status.transition_events(worse, good)
    assert ("Normal", "Recovered", "no longer degraded (was ModelUnreachable)") in recovered
    assert ("Normal", "Ready", f"serving v1 95%, v2 5% at {ENDPOINT}") in recovered


def test_rollout_identity_follows_the_state_not_a_waiting_spec() -> None:
    from ferryman_operator.reconcile import rollout_identity

    old = md({"strategy": "static"})
    state, _ = rollout.start(old, now=0.0)
    first = build(None, ready("v1"), m=old, state=state)
    assert first["rolloutIdentity"] == rollout_identity(old)
    new = md()  # a canary the operator has not started yet (waiting for v2): the old state is still in force
    waiting = build(first, ready("v1"), m=new, state=state, waiting="the new rollout starts once ready: v2")
    assert waiting["rolloutIdentity"] == rollout_identity(old)
    started, _ = rollout.start(new, now=1.0, previous=state)
    assert build(waiting, ready("v1", "v2"), m=new, state=started)["rolloutIdentity"] == rollout_identity(new)
