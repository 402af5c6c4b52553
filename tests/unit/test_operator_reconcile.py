"""The operator's pure decisions (ferryman_operator.reconcile): parsing, resuming vs starting a rollout,
waiting for new versions to be ready, analysis timing, manual actions and the Events they produce."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ferryman import rollout
from ferryman.analysis import VersionStats
from ferryman.errors import Conflict, SpecError
from ferryman.rollout import Action, Phase
from ferryman.spec import ModelDeployment
from ferryman_operator import reconcile
from ferryman_operator.backends.base import Readiness

BODY: dict[str, Any] = {
    "apiVersion": "serving.ferryman.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {
        "name": "m",
        "namespace": "ns",
        "uid": "u-1",
        "generation": 3,
        "resourceVersion": "17",
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {"a": "b"},
    },
    "spec": {
        "versions": [{"name": "v1", "uri": "s3://b/1.onnx"}, {"name": "v2", "uri": "s3://b/2.onnx"}],
        "traffic": {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": [25, 50, 100],
                "intervalSeconds": 10,
                "failureThreshold": 2,
                "minRequests": 10,
            },
        },
    },
}

READY = Readiness(versions={"v1": (True, "v1 ok"), "v2": (True, "v2 ok"), "v3": (True, "v3 ok")})


def body(**spec_changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    b["spec"].update(spec_changes)
    return b


def md(**spec_changes: Any) -> ModelDeployment:
    return reconcile.parse(body(**spec_changes))


def good(version: str = "v2") -> VersionStats:
    return VersionStats(version, requests=100, errors=0, p99_seconds=0.02)


def slow(version: str = "v2") -> VersionStats:
    return VersionStats(version, requests=100, errors=0, p99_seconds=0.5)


def test_parse_keeps_only_what_the_spec_reads() -> None:
    m = reconcile.parse(BODY)
    assert m.name == "m" and m.metadata.namespace == "ns"
    assert [v.name for v in m.spec.versions] == ["v1", "v2"]


def test_parse_names_the_invalid_field() -> None:
    bad = body(traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v9": 50}}})
    with pytest.raises(SpecError) as err:
        reconcile.parse(bad)
    assert "ns/m: invalid ModelDeployment" in str(err.value)
    assert "spec.traffic.abTest.weights: unknown version 'v9'" in str(err.value)


def test_saved_state_round_trip_and_garbage() -> None:
    m = md()
    state, _ = rollout.start(m, now=100.0)
    assert reconcile.saved_state({"status": {"rollout": state.to_dict()}}) == state
    assert reconcile.saved_state({"status": {}}) is None
    assert reconcile.saved_state({"status": {"rollout": {"phase": "Nope"}}}) is None


def test_rollout_versions() -> None:
    assert reconcile.rollout_versions(md()) == ("v1", "v2")
    assert reconcile.rollout_versions(md(traffic={"strategy": "static"})) == ("v1",)
    ab = md(traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 100, "v2": 0}}})
    assert reconcile.rollout_versions(ab) == ("v1",)


def test_first_reconcile_starts_the_rollout() -> None:
    decided = reconcile.decide_spec(md(), None, readiness=Readiness(), now=10.0)
    assert decided.state.phase == Phase.progressing and decided.state.weights == {"v1": 75, "v2": 25}
    assert [d.action for d in decided.decisions] == [Action.start]
    assert decided.waiting is None


def test_same_spec_resumes_the_saved_state_exactly() -> None:
    m = md()
    saved, _ = rollout.start(m, now=10.0)
    decided = reconcile.decide_spec(m, saved, readiness=Readiness(), now=999.0)
    assert decided.state is saved and decided.decisions == () and decided.waiting is None


def test_new_rollout_waits_until_its_versions_are_ready() -> None:
    old = md(traffic={"strategy": "static", "stable": "v1"})
    saved, _ = rollout.start(old, now=10.0)
    new = md()
    waiting = reconcile.decide_spec(
        new, saved, readiness=Readiness(versions={"v1": (True, ""), "v2": (False, "v2: 0/1 ready")}), now=20.0
    )
    assert waiting.state is saved and waiting.decisions == ()
    assert waiting.waiting == "the new rollout starts once ready: v2: 0/1 ready"
    started = reconcile.decide_spec(new, saved, readiness=READY, now=30.0)
    assert started.state.weights == {"v1": 75, "v2": 25} and started.decisions[0].action == Action.start
    assert [d.action for d in started.state.history] == [Action.start, Action.start]


def test_a_saved_state_that_no_longer_fits_is_replaced_at_once() -> None:
    saved, _ = rollout.start(md(), now=10.0)
    only_v3 = md(versions=[{"name": "v3", "uri": "s3://b/3.onnx"}], traffic={"strategy": "static"})
    assert not reconcile.usable(saved, only_v3)
    decided = reconcile.decide_spec(only_v3, saved, readiness=Readiness(), now=20.0)
    assert decided.state.weights == {"v3": 100} and decided.waiting is None


def test_analysis_due_once_per_interval_while_progressing() -> None:
    m = md()
    state, _ = rollout.start(m, now=100.0)
    assert reconcile.analysis_due(state, m, now=105.0) is None
    assert reconcile.analysis_due(state, m, now=110.0) == "v2"
    paused, _ = rollout.pause(state, now=111.0)
    assert reconcile.analysis_due(paused, m, now=200.0) is None
    static, _ = rollout.start(md(traffic={"strategy": "static"}), now=100.0)
    assert reconcile.analysis_due(static, md(traffic={"strategy": "static"}), now=500.0) is None


def test_passing_analyses_walk_the_steps_and_failing_ones_roll_back() -> None:
    m = md()
    state, _ = rollout.start(m, now=0.0)
    seen = []
    for t in (10.0, 20.0, 30.0):
        state, decision = reconcile.analyse(state, m, stats=good(), now=t)
        assert decision is not None
        seen.append((decision.action, decision.weights))
    assert seen == [
        (Action.advance, {"v1": 50, "v2": 50}),
        (Action.advance, {"v2": 100}),
        (Action.promote, {"v2": 100}),
    ]
    state, _ = rollout.start(m, now=0.0)
    state, first = reconcile.analyse(state, m, stats=slow(), now=10.0)
    assert first is not None and first.action == Action.hold and state.failures == 1
    state, second = reconcile.analyse(state, m, stats=slow(), now=20.0)
    assert second is not None and second.action == Action.rollback and state.weights == {"v1": 100}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, None),
        ("", None),
        ("promote", ("promote", None)),
        (" Promote:v2 ", ("promote", "v2")),
        ("rollback", ("rollback", None)),
    ],
)
def test_parse_action(value: str | None, parsed: tuple[str, str | None] | None) -> None:
    assert reconcile.parse_action(value) == parsed


def test_manual_actions() -> None:
    m = md()
    state, _ = rollout.start(m, now=0.0)
    paused, d = reconcile.apply_action(state, "pause", None, now=1.0, actor="annotation")
    assert paused.phase == Phase.paused and d.actor == "annotation"
    resumed, _ = reconcile.apply_action(paused, "resume", None, now=2.0, actor="annotation")
    assert resumed.phase == Phase.progressing
    promoted, d = reconcile.apply_action(resumed, "promote", None, now=3.0, actor="annotation")
    assert promoted.weights == {"v2": 100} and "annotation" in d.reason
    with pytest.raises(Conflict):
        reconcile.apply_action(promoted, "promote", None, now=4.0, actor="annotation")
    with pytest.raises(SpecError, match="unknown action 'explode'"):
        reconcile.apply_action(state, "explode", None, now=4.0, actor="annotation")


def test_events_explain_decisions_but_not_data_holds() -> None:
    m = md()
    state, start = rollout.start(m, now=0.0)
    assert reconcile.event_for(start, state) == (
        "Normal",
        "RolloutStarted",
        "canary of v2 started at 25% (steps [25, 50, 100]) [traffic: v1 75%, v2 25%]",
    )
    held_state, held = reconcile.analyse(state, m, stats=VersionStats("v2", 1, 0, 0.01), now=10.0)
    assert held is not None and held.action == Action.hold and reconcile.event_for(held, held_state) is None
    failed_state, failed = reconcile.analyse(state, m, stats=slow(), now=10.0)
    assert failed is not None
    kind, reason, message = reconcile.event_for(failed, failed_state) or ("", "", "")
    assert (kind, reason) == ("Warning", "AnalysisFailed") and "p99_latency_ms 500.0 exceeds 100.0" in message
    rolled_state, rolled = rollout.rollback(state, now=11.0)
    assert reconcile.event_for(rolled, rolled_state)[:2] == ("Warning", "RolledBack")  # type: ignore[index]


def test_scaling_a_version_is_not_a_new_rollout() -> None:
    m = md()
    state, _ = rollout.start(m, now=0.0)
    promoted, _ = rollout.promote(state, now=5.0)
    identity = reconcile.rollout_identity(m)
    scaled = md(
        versions=[
            {"name": "v1", "uri": "s3://b/1.onnx", "replicas": 3},
            {"name": "v2", "uri": "s3://b/2.onnx", "resources": {"cpu": "2", "memory": "1Gi"}},
        ]
    )
    # neither the operator's identity nor the core's spec hash counts scaling as a new rollout
    assert reconcile.rollout_identity(scaled) == identity and rollout.spec_hash(scaled) == promoted.spec_hash
    kept = reconcile.decide_spec(scaled, promoted, readiness=READY, now=9.0, saved_identity=identity)
    assert kept.decisions == () and kept.state.phase == Phase.promoted and kept.state.weights == {"v2": 100}
    assert kept.state.spec_hash == rollout.spec_hash(scaled)
    # a new model file is a new rollout
    new_file = md(versions=[{"name": "v1", "uri": "s3://b/1.onnx"}, {"name": "v2", "uri": "s3://b/2b.onnx"}])
    assert reconcile.rollout_identity(new_file) != identity
    restarted = reconcile.decide_spec(new_file, promoted, readiness=READY, now=9.0, saved_identity=identity)
    assert [d.action for d in restarted.decisions] == [Action.start]


def test_editing_analysis_settings_neither_restarts_a_canary_nor_undoes_a_promotion() -> None:
    m = md()
    state, _ = rollout.start(m, now=0.0)
    stepped, _ = reconcile.analyse(state, m, stats=good(), now=10.0)
    assert stepped.weights == {"v1": 50, "v2": 50}
    identity = reconcile.rollout_identity(m)
    tuned = md(
        traffic={
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": [25, 50, 100],
                "intervalSeconds": 3,
                "failureThreshold": 4,
                "minRequests": 10,
            },
        }
    )
    assert reconcile.rollout_identity(tuned) == identity
    kept = reconcile.decide_spec(tuned, stepped, readiness=READY, now=11.0, saved_identity=identity)
    assert kept.decisions == () and kept.state == stepped
    promoted, _ = rollout.promote(stepped, now=12.0)
    after = reconcile.decide_spec(tuned, promoted, readiness=READY, now=13.0, saved_identity=identity)
    assert (
        after.decisions == () and after.state.weights == {"v2": 100} and after.state.phase == Phase.promoted
    )
    # a new identity that still names the promoted version as candidate keeps it at 100 %
    resteps = md(
        traffic={"strategy": "canary", "stable": "v1", "candidate": "v2", "canary": {"steps": [10, 100]}}
    )
    moved = reconcile.decide_spec(resteps, promoted, readiness=READY, now=14.0, saved_identity=identity)
    assert moved.state.weights == {"v2": 100} and moved.state.candidate is None


def test_a_new_rollout_is_not_judged_on_drift_measured_before_it_started() -> None:
    m = md(
        drift={"enabled": True, "threshold": 0.5},
        versions=[
            {"name": "v1", "uri": "s3://b/1.onnx", "referenceData": "s3://b/ref.npy"},
            {"name": "v2", "uri": "s3://b/2.onnx", "referenceData": "s3://b/ref.npy"},
        ],
    )
    state, _ = rollout.start(m, now=100.0)
    stale = VersionStats(
        "v2", requests=100, errors=0, p99_seconds=0.02, drift_share=1.0, drift_measured_at=90.0
    )
    held, decision = reconcile.analyse(state, m, stats=stale, now=110.0)
    assert decision is not None and decision.action == Action.hold and held.phase == Phase.progressing
    assert "waiting for the first drift measurement" in decision.reason
    fresh = VersionStats(
        "v2", requests=100, errors=0, p99_seconds=0.02, drift_share=1.0, drift_measured_at=105.0
    )
    failed, decision = reconcile.analyse(state, m, stats=fresh, now=110.0)  # this rollout's own drift counts
    assert decision is not None and failed.failures == 1 and "drift_share 1.0 exceeds 0.5" in decision.reason
