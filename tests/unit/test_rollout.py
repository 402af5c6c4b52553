"""The rollout state machine: every transition, with an explicit clock and hand-made window statistics."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from ferryman import rollout
from ferryman.analysis import VersionStats
from ferryman.errors import Conflict
from ferryman.rollout import Action, Phase, RolloutState, reconcile_spec, spec_hash, start, table_for, tick
from ferryman.spec import ModelDeployment, Strategy, parse_deployment

INTERVAL = 10.0
T0 = 1_000.0


def deployment(
    traffic: dict[str, Any], *, versions: tuple[str, ...] = ("v1", "v2"), drift: dict[str, Any] | None = None
) -> ModelDeployment:
    return parse_deployment(
        {
            "apiVersion": "serving.ferryman.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {
                "versions": [{"name": v, "uri": f"/models/{v}.onnx"} for v in versions],
                "budget": {"p99Ms": 100, "maxErrorRate": 0.01},
                "drift": drift or {"enabled": False},
                "traffic": traffic,
            },
        }
    )


def canary(steps: list[int] | None = None, **policy: Any) -> ModelDeployment:
    return deployment(
        {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": steps or [10, 50, 100],
                "intervalSeconds": INTERVAL,
                "failureThreshold": 2,
                "minRequests": 50,
                **policy,
            },
        }
    )


def blue_green(*, auto: bool, threshold: int = 1) -> ModelDeployment:
    return deployment(
        {
            "strategy": "blueGreen",
            "stable": "v1",
            "candidate": "v2",
            "blueGreen": {
                "analysisIntervalSeconds": INTERVAL,
                "minRequests": 50,
                "failureThreshold": threshold,
                "autoPromote": auto,
            },
        }
    )


def ab_test() -> ModelDeployment:
    return deployment(
        {
            "strategy": "abTest",
            "abTest": {"weights": {"v1": 50, "v2": 50}, "sticky": {"source": "cookie", "name": "uid"}},
        }
    )


def stats(
    *,
    requests: int = 500,
    errors: int = 0,
    p99_ms: float = 20.0,
    drift: float | None = None,
    asked: list[str] | None = None,
) -> Callable[[str], VersionStats]:
    def read(version: str) -> VersionStats:
        if asked is not None:
            asked.append(version)
        return VersionStats(version, requests, errors, p99_ms / 1000, drift_share=drift)

    return read


HEALTHY = stats()
SLOW = stats(p99_ms=150.0)
QUIET = stats(requests=3)


def run(
    state: RolloutState, md: ModelDeployment, read: Callable[[str], VersionStats], at: float
) -> tuple[RolloutState, Any]:
    return tick(state, md, stats=read, now=at)


# -- start ----------------------------------------------------------------------------------------------
def test_start_per_strategy() -> None:
    s, d = start(canary(), now=T0)
    assert (s.phase, s.step_index, s.weights, s.candidate) == (
        Phase.progressing,
        0,
        {"v1": 90, "v2": 10},
        "v2",
    )
    assert d.action == Action.start and "canary of v2" in d.reason and s.history == (d,)

    s, _ = start(blue_green(auto=True), now=T0)
    assert (s.phase, s.weights) == (Phase.progressing, {"v1": 100})

    s, _ = start(ab_test(), now=T0)
    assert (s.phase, s.weights, s.candidate) == (Phase.running, {"v1": 50, "v2": 50}, None)

    s, _ = start(deployment({"strategy": "shadow", "candidate": "v2"}), now=T0)
    assert (s.phase, s.weights, s.candidate) == (Phase.running, {"v1": 100}, "v2")

    s, d = start(deployment({}), now=T0)
    assert (s.phase, s.weights) == (Phase.stable, {"v1": 100}) and d.reason == "serving v1"


# -- canary ticks ---------------------------------------------------------------------------------------
def test_nothing_happens_before_the_interval() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    asked: list[str] = []
    same, decision = run(s, md, stats(asked=asked), T0 + INTERVAL - 0.01)
    assert decision is None and same == s and asked == []


def test_a_healthy_canary_advances_through_every_step_then_promotes() -> None:
    md = canary([10, 50, 100])
    s, _ = start(md, now=T0)
    asked: list[str] = []
    seen = []
    at = T0
    for _ in range(3):
        at += INTERVAL
        s, d = run(s, md, stats(asked=asked), at)
        seen.append((d.action, dict(d.weights), s.step_index))
        assert s.step_started_at == at and s.failures == 0
    assert seen == [
        (Action.advance, {"v1": 50, "v2": 50}, 1),
        (Action.advance, {"v2": 100}, 2),
        (Action.promote, {"v2": 100}, -1),
    ]  # promoted: no step is active any more
    assert set(asked) == {"v2"}  # only the candidate is judged
    assert (s.phase, s.stable, s.candidate, s.previous_stable) == (Phase.promoted, "v2", None, "v1")
    assert "final step passed" in s.history[-1].reason and "within budget" in s.history[-1].reason
    assert run(s, md, HEALTHY, at + 10 * INTERVAL) == (s, None)  # a promoted rollout is over


def test_not_enough_data_holds_and_the_window_keeps_growing() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, d = run(s, md, QUIET, T0 + INTERVAL)
    assert d.action == Action.hold and "only 3 of 50 requests" in d.reason
    assert s.weights == {"v1": 90, "v2": 10} and s.step_index == 0 and s.failures == 0
    assert (
        s.step_started_at == T0 and s.analyzed_at == T0 + INTERVAL
    )  # same window, next look in one interval
    assert run(s, md, HEALTHY, T0 + INTERVAL + 1)[1] is None
    s, d = run(s, md, HEALTHY, T0 + 2 * INTERVAL)
    assert d.action == Action.advance


def test_a_run_of_holds_for_lack_of_data_is_one_history_entry() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    for n in range(1, 30):
        s, d = run(s, md, stats(requests=n), T0 + n * INTERVAL)
        assert d.action == Action.hold
    assert [h.action for h in s.history] == [Action.start, Action.hold]
    assert s.history[-1].reason.startswith("only 29 of 50")
    s, d = run(s, md, SLOW, T0 + 40 * INTERVAL)  # a real verdict is always recorded
    s, d = run(s, md, QUIET, T0 + 41 * INTERVAL)
    assert [h.action for h in s.history] == [Action.start, Action.hold, Action.hold, Action.hold]


def test_a_failure_below_the_threshold_holds_and_restarts_the_window() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    at = T0 + INTERVAL
    s, d = run(s, md, SLOW, at)
    assert (
        d.action == Action.hold
        and d.reason.startswith("analysis failed (1/2)")
        and "p99_latency_ms" in d.reason
    )
    assert s.failures == 1 and s.step_started_at == at and s.weights == {"v1": 90, "v2": 10}
    assert s.last_analysis is not None and s.last_analysis.outcome.value == "fail"
    s, d = run(s, md, HEALTHY, at + INTERVAL)  # a pass clears the count
    assert d.action == Action.advance and s.failures == 0


def test_reaching_the_failure_threshold_rolls_back_to_stable() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = run(s, md, HEALTHY, T0 + INTERVAL)  # at 50 %
    s, d1 = run(s, md, SLOW, T0 + 2 * INTERVAL)
    s, d2 = run(s, md, QUIET, T0 + 3 * INTERVAL)  # not enough data neither passes nor fails
    s, d3 = run(s, md, SLOW, T0 + 4 * INTERVAL)
    assert [d1.action, d2.action, d3.action] == [Action.hold, Action.hold, Action.rollback]
    assert (s.phase, s.weights, s.stable, s.candidate) == (Phase.rolled_back, {"v1": 100}, "v1", "v2")
    assert d3.reason.startswith("analysis failed 2x (threshold 2): p99_latency_ms 150.0 exceeds 100.0")
    assert d3.actor == "controller"
    assert table_for(md, s).weights == (("v1", 100),)
    assert run(s, md, SLOW, T0 + 9 * INTERVAL) == (s, None)


def test_error_rate_and_drift_fail_the_analysis() -> None:
    md = canary(failureThreshold=1)
    s, _ = start(md, now=T0)
    _, d = run(s, md, stats(errors=25), T0 + INTERVAL)
    assert d.action == Action.rollback and "error_rate 0.05 exceeds 0.01" in d.reason

    drifty = deployment(md.spec.traffic.model_dump(by_alias=True), drift={"enabled": True, "threshold": 0.5})
    s, _ = start(drifty, now=T0)
    _, d = run(s, drifty, stats(drift=0.8), T0 + INTERVAL)
    assert d.action == Action.rollback and "drift_share 0.8 exceeds 0.5" in d.reason
    _, d = run(s, drifty, stats(drift=0.1), T0 + INTERVAL)
    assert d.action == Action.advance
    off = deployment(md.spec.traffic.model_dump(by_alias=True), drift={"enabled": False})
    _, d = run(s, off, stats(drift=0.8), T0 + INTERVAL)  # drift monitoring off: no veto
    assert d.action == Action.advance


# -- pause / resume -------------------------------------------------------------------------------------
def test_pause_freezes_the_rollout_and_resume_restarts_the_window() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, d = rollout.pause(s, now=T0 + 1, actor="ops", reason="investigating")
    assert (s.phase, s.resume_phase, d.actor, d.reason) == (
        Phase.paused,
        Phase.progressing,
        "ops",
        "investigating",
    )
    assert s.weights == {"v1": 90, "v2": 10}
    assert run(s, md, HEALTHY, T0 + 100 * INTERVAL) == (s, None)
    with pytest.raises(Conflict):
        rollout.pause(s, now=T0 + 2)
    s, d = rollout.resume(s, now=T0 + 500)
    assert (s.phase, s.resume_phase, s.step_started_at, d.action) == (
        Phase.progressing,
        None,
        T0 + 500,
        Action.resume,
    )
    assert run(s, md, HEALTHY, T0 + 500 + INTERVAL - 1)[1] is None
    assert run(s, md, HEALTHY, T0 + 500 + INTERVAL)[1].action == Action.advance
    with pytest.raises(Conflict):
        rollout.resume(s, now=T0 + 501)


def test_an_ab_test_pauses_and_resumes_to_running() -> None:
    s, _ = start(ab_test(), now=T0)
    s, _ = rollout.pause(s, now=T0)
    s, _ = rollout.resume(s, now=T0)
    assert s.phase == Phase.running


@pytest.mark.parametrize("md", [deployment({}), canary()])
def test_only_an_active_rollout_can_pause(md: ModelDeployment) -> None:
    s, _ = start(md, now=T0)
    if s.phase == Phase.progressing:
        s, _ = rollout.promote(s, now=T0)
    with pytest.raises(Conflict, match="cannot pause"):
        rollout.pause(s, now=T0)


# -- blue-green -----------------------------------------------------------------------------------------
def test_blue_green_auto_promotes_after_a_passing_preview() -> None:
    md = blue_green(auto=True)
    s, _ = start(md, now=T0)
    s, d = run(s, md, QUIET, T0 + INTERVAL)
    assert d.action == Action.hold and s.weights == {"v1": 100}
    s, d = run(s, md, HEALTHY, T0 + 2 * INTERVAL)
    assert d.action == Action.promote and d.reason.startswith("preview passed")
    assert (s.phase, s.weights, s.stable, s.previous_stable) == (Phase.promoted, {"v2": 100}, "v2", "v1")


def test_blue_green_manual_waits_for_a_human_then_switches_and_undoes() -> None:
    md = blue_green(auto=False)
    s, _ = start(md, now=T0)
    s, d = run(s, md, HEALTHY, T0 + INTERVAL)
    assert d.action == Action.hold and "awaiting manual promotion" in d.reason and s.weights == {"v1": 100}
    s, d = run(s, md, HEALTHY, T0 + 2 * INTERVAL)
    assert d.action == Action.hold and s.phase == Phase.progressing
    s, d = rollout.promote(s, now=T0 + 25, actor="ops", reason="ship it")
    assert (s.phase, s.weights, s.stable, d.actor) == (Phase.promoted, {"v2": 100}, "v2", "ops")
    s, d = rollout.rollback(s, now=T0 + 26)
    assert (s.phase, s.weights, s.stable, s.candidate) == (Phase.rolled_back, {"v1": 100}, "v1", "v2")
    assert table_for(md, s).weights == (("v1", 100),)


def test_a_failing_preview_is_rolled_back_at_once() -> None:
    md = blue_green(auto=True, threshold=1)
    s, _ = start(md, now=T0)
    s, d = run(s, md, SLOW, T0 + INTERVAL)
    assert d.action == Action.rollback and (s.phase, s.weights) == (Phase.rolled_back, {"v1": 100})


# -- promote / rollback ---------------------------------------------------------------------------------
def test_promote_then_rollback_returns_to_the_previous_stable() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = rollout.promote(s, now=T0 + 1)
    assert (s.stable, s.previous_stable, s.weights) == ("v2", "v1", {"v2": 100})
    s, d = rollout.rollback(s, now=T0 + 2, actor="ops")
    assert (d.action, d.weights, d.actor) == (Action.rollback, {"v1": 100}, "ops")
    assert (s.phase, s.stable, s.candidate, s.previous_stable) == (Phase.rolled_back, "v1", "v2", None)
    with pytest.raises(Conflict, match="nothing to roll back"):
        rollout.rollback(s, now=T0 + 3)


def test_nothing_to_promote_or_roll_back() -> None:
    s, _ = start(deployment({}), now=T0)
    with pytest.raises(Conflict, match="nothing to promote"):
        rollout.promote(s, now=T0)
    with pytest.raises(Conflict, match="nothing to roll back"):
        rollout.rollback(s, now=T0)
    s, _ = start(canary(), now=T0)
    s, _ = rollout.promote(s, now=T0)
    with pytest.raises(Conflict, match="nothing to promote"):
        rollout.promote(s, now=T0)


def test_a_paused_canary_can_be_rolled_back() -> None:
    s, _ = start(canary(), now=T0)
    s, _ = rollout.pause(s, now=T0)
    s, _ = rollout.rollback(s, now=T0)
    assert (s.phase, s.weights, s.resume_phase) == (Phase.rolled_back, {"v1": 100}, None)


def test_ab_test_promotes_the_winning_arm_or_stops() -> None:
    md = ab_test()
    s, _ = start(md, now=T0)
    assert run(s, md, SLOW, T0 + 1000)[1] is None  # an A/B test runs until stopped
    won, d = rollout.promote(s, now=T0, version="v2", reason="v2 wins")
    assert (won.phase, won.weights, won.stable, d.reason) == (Phase.promoted, {"v2": 100}, "v2", "v2 wins")
    assert table_for(md, won).sticky is None
    with pytest.raises(Conflict, match="not part of this rollout"):
        rollout.promote(s, now=T0, version="v7")
    stopped, _ = rollout.rollback(s, now=T0)
    assert (stopped.phase, stopped.weights) == (Phase.rolled_back, {"v1": 100})


# -- reconcile ------------------------------------------------------------------------------------------
def test_reconcile_resumes_the_same_spec_and_restarts_for_a_new_one() -> None:
    md = canary()
    fresh, d = reconcile_spec(None, md, now=T0)
    assert d is not None and d.action == Action.start
    s, _ = run(fresh, md, HEALTHY, T0 + INTERVAL)
    resumed, d = reconcile_spec(s, canary(), now=T0 + 999)  # the same spec, parsed again (a restart)
    assert d is None and resumed == s

    v3 = deployment(
        {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v3",
            "canary": {"steps": [10, 50, 100], "intervalSeconds": INTERVAL},
        },
        versions=("v1", "v2", "v3"),
    )
    assert spec_hash(v3) != spec_hash(md)
    restarted, d = reconcile_spec(s, v3, now=T0 + 999)
    assert d is not None and d.action == Action.start
    assert (restarted.candidate, restarted.step_index, restarted.weights) == ("v3", 0, {"v1": 90, "v3": 10})
    assert restarted.history[: len(s.history)] == s.history  # the record carries over


def test_a_new_rollout_starts_from_the_promoted_stable() -> None:
    s, _ = start(canary(), now=T0)
    s, _ = rollout.promote(s, now=T0)
    v3 = deployment({"strategy": "canary", "stable": "v1", "candidate": "v3"}, versions=("v1", "v2", "v3"))
    s, _ = reconcile_spec(s, v3, now=T0 + 1)
    assert (s.stable, s.candidate, s.phase) == ("v2", "v3", Phase.progressing)
    assert s.weights == {"v2": 95, "v3": 5}


def test_a_saved_state_naming_a_removed_version_starts_over() -> None:
    s, _ = start(canary(), now=T0)
    s = replace(s, spec_hash=spec_hash(canary()), candidate="gone")
    s2, d = reconcile_spec(s, canary(), now=T0)
    assert d is not None and s2.candidate == "v2"


# -- persistence and tables ------------------------------------------------------------------------------
def test_to_dict_from_dict_round_trip_through_json() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = run(s, md, SLOW, T0 + INTERVAL)
    s, _ = rollout.pause(s, now=T0 + INTERVAL + 1, actor="ops")
    doc = json.loads(json.dumps(s.to_dict()))
    back = RolloutState.from_dict(doc)
    assert back == s
    assert back.to_dict() == doc
    assert doc["phase"] == "Paused" and doc["resumePhase"] == "Progressing" and doc["failures"] == 1
    assert doc["lastAnalysis"]["outcome"] == "fail"


def test_history_is_bounded() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    for n in range(rollout.HISTORY_LIMIT + 10):
        s, _ = rollout.pause(s, now=T0 + n)
        s, _ = rollout.resume(s, now=T0 + n)
    assert len(s.history) == rollout.HISTORY_LIMIT
    assert s.history[-1].action == Action.resume


def test_tables_realise_the_state() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    t = table_for(md, s)
    assert (t.weights, t.stable, t.candidate) == ((("v1", 90), ("v2", 10)), "v1", "v2")

    md = ab_test()
    s, _ = start(md, now=T0)
    assert table_for(md, s).sticky is not None
    paused, _ = rollout.pause(s, now=T0)
    assert table_for(md, paused).sticky is not None  # a paused A/B test keeps its arms

    md = deployment({"strategy": "shadow", "candidate": "v2", "shadow": {"percent": 30}})
    s, _ = start(md, now=T0)
    t = table_for(md, s)
    assert (t.shadow, t.shadow_percent, t.weights) == ("v2", 30.0, (("v1", 100),))
    stopped, _ = rollout.rollback(s, now=T0)
    t = table_for(md, stopped)
    assert (t.shadow, t.candidate) == (None, None)
    assert s.strategy == Strategy.shadow


# -- what is a new rollout (issue 18) ---------------------------------------------------------------------
def test_editing_analysis_settings_keeps_the_running_canary_and_its_traffic() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = run(s, md, HEALTHY, T0 + INTERVAL)
    assert s.step_index == 1
    tuned = canary(intervalSeconds=3, failureThreshold=5, minRequests=7)
    tuned = tuned.model_copy(
        update={
            "spec": tuned.spec.model_copy(
                update={"budget": tuned.spec.budget.model_copy(update={"p99_ms": 250.0})}
            )
        }
    )
    assert spec_hash(tuned) == spec_hash(md)
    kept, d = reconcile_spec(s, tuned, now=T0 + INTERVAL + 1)
    assert d is None and kept == s
    # the next analysis uses the edited interval: 3 s later it runs (10 s would still wait)
    _, d = run(kept, tuned, HEALTHY, T0 + INTERVAL + 3)
    assert d is not None and d.action == Action.advance


@pytest.mark.parametrize(
    "change",
    [
        {"steps": [20, 100]},
        {"candidate": "v3"},
        {"strategy": "blueGreen"},
    ],
)
def test_what_moves_traffic_is_a_new_rollout(change: dict[str, Any]) -> None:
    traffic: dict[str, Any] = {
        "strategy": "canary",
        "stable": "v1",
        "candidate": "v2",
        "canary": {"steps": [10, 50, 100]},
    }
    edited = dict(traffic)
    if "steps" in change:
        edited["canary"] = {"steps": change["steps"]}
    else:
        edited.update(change)
    before = deployment(traffic, versions=("v1", "v2", "v3"))
    after = deployment(edited, versions=("v1", "v2", "v3"))
    assert spec_hash(before) != spec_hash(after)


def test_a_new_model_file_is_a_new_rollout() -> None:
    md = canary()
    doc = md.model_dump(by_alias=True, mode="json")
    doc["spec"]["versions"][1]["uri"] = "/models/v2-retrained.onnx"
    assert spec_hash(parse_deployment(doc)) != spec_hash(md)


def test_after_promotion_an_analysis_edit_does_not_resurrect_the_old_stable() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = rollout.promote(s, now=T0 + 1)
    assert (s.phase, s.weights, s.step_index) == (Phase.promoted, {"v2": 100}, -1)
    kept, d = reconcile_spec(s, canary(intervalSeconds=99), now=T0 + 2)
    assert d is None and kept.weights == {"v2": 100} and kept.phase == Phase.promoted


def test_after_promotion_a_spec_naming_the_promoted_candidate_is_steady_state() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = rollout.promote(s, now=T0 + 1)
    # an edit that is a new identity (new steps) but still names the promoted version as candidate
    edited = canary([20, 100])
    s2, d = reconcile_spec(s, edited, now=T0 + 2)
    assert d is not None and d.action == Action.start
    assert (s2.stable, s2.candidate, s2.weights, s2.phase) == ("v2", None, {"v2": 100}, Phase.stable)
    # and stays so: ticking never moves traffic back
    s3, d = run(s2, edited, HEALTHY, T0 + 100)
    assert d is None and s3.weights == {"v2": 100}


def test_after_a_rollback_the_same_candidate_can_be_rolled_out_again() -> None:
    md = canary()
    s, _ = start(md, now=T0)
    s, _ = rollout.rollback(s, now=T0 + 1)
    assert s.step_index == -1
    retry, d = reconcile_spec(s, canary([20, 100]), now=T0 + 2)
    assert d is not None and (retry.stable, retry.candidate, retry.weights) == (
        "v1",
        "v2",
        {"v1": 80, "v2": 20},
    )


def test_a_drift_result_from_before_the_rollout_started_does_not_count() -> None:
    md = deployment(
        {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {"steps": [50, 100], "intervalSeconds": INTERVAL, "minRequests": 50},
        },
        drift={"enabled": True, "threshold": 0.5},
    )
    s, _ = start(md, now=T0)
    assert s.started_at == T0

    def drift_at(share: float, at: float) -> Callable[[str], VersionStats]:
        return lambda v: VersionStats(v, 500, 0, 0.02, drift_share=share, drift_measured_at=at)

    held, d = run(s, md, drift_at(1.0, T0 - 5), T0 + INTERVAL)  # the previous rollout's drift
    assert d is not None and d.action == Action.hold and "waiting for the first drift measurement" in d.reason
    assert held.failures == 0
    _, d = run(held, md, drift_at(0.0, T0 + 8), T0 + 2 * INTERVAL)  # this rollout's own run
    assert d is not None and d.action == Action.advance
    failed, d = run(held, md, drift_at(1.0, T0 + 8), T0 + 2 * INTERVAL)  # real drift still fails
    assert d is not None and failed.failures == 1 and "drift_share" in d.reason


def test_started_at_round_trips_and_old_states_read_as_zero() -> None:
    s, _ = start(canary(), now=T0)
    doc = json.loads(json.dumps(s.to_dict()))
    assert RolloutState.from_dict(doc).started_at == T0
    del doc["startedAt"]
    assert RolloutState.from_dict(doc).started_at == 0.0


def test_a_kubernetes_status_carries_readable_times_and_reads_back() -> None:
    md = canary()
    s, _ = start(md, now=1_796_621_203.194575)
    s, _ = run(s, md, HEALTHY, 1_796_621_203.194575 + INTERVAL)
    doc = json.loads(json.dumps(s.to_dict(iso_times=True)))
    assert doc["startedAt"] == "2026-12-07T05:26:43.194575Z"
    assert doc["history"][0]["at"] == doc["startedAt"] and doc["analyzedAt"].endswith("Z")
    back = RolloutState.from_dict(doc)
    assert abs(back.started_at - s.started_at) < 1e-5 and back.phase == s.phase and back.weights == s.weights
    assert RolloutState.from_dict(back.to_dict(iso_times=True)).to_dict(iso_times=True) == doc  # stable
    with pytest.raises(ValueError, match="not a time"):
        RolloutState.from_dict({**doc, "startedAt": "yesterday"})
