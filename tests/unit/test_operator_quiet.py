"""The pure parts of a quiet operator: when an owned object must be applied again, which status changes are
worth a write, when the next analysis is due, and the client's retry delays."""

from __future__ import annotations

import copy
from typing import Any

from ferryman.rollout import Phase, RolloutState
from ferryman.spec import Strategy, parse_deployment
from ferryman_operator import names, status
from ferryman_operator.controller import Applied, edit_marker, needs_apply, next_analysis_in
from ferryman_operator.kube.client import backoff_delay
from ferryman_operator.kube.informer import newer


def obj(*, stamp: str | None, rv: str, generation: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "m-v1", "resourceVersion": rv}
    if generation is not None:
        meta["generation"] = generation
    if stamp is not None:
        meta["annotations"] = {names.ANNOTATION_APPLIED: stamp}
    return {"metadata": meta}


def test_needs_apply() -> None:
    # missing and never applied; or the spec asks for something else
    assert needs_apply("h1", None, None)
    assert needs_apply("h2", obj(stamp="h1", rv="10", generation=1), None)
    # after a restart (no record): applied once even when the stamp matches, since an edit made while no
    # operator ran leaves the stamp in place (a no-op server-side apply writes nothing)
    assert needs_apply("h1", obj(stamp="h1", rv="10", generation=1), None)
    # our last write not delivered by the watch yet: trust the record
    record = Applied("h1", "g2", "20")
    assert not needs_apply("h1", obj(stamp="h0", rv="10", generation=1), record)
    assert not needs_apply("h1", None, record)
    assert needs_apply("h2", None, record)
    # delivered: unchanged, a status update (generation kept), an edit by someone else (generation moved)
    assert not needs_apply("h1", obj(stamp="h1", rv="20", generation=2), record)
    assert not needs_apply("h1", obj(stamp="h1", rv="25", generation=2), record)
    assert needs_apply("h1", obj(stamp="h1", rv="30", generation=3), record)
    # objects without a generation (ConfigMaps): any newer version is an edit
    cm = Applied("h1", "r20", "20")
    assert not needs_apply("h1", obj(stamp="h1", rv="20"), cm)
    assert needs_apply("h1", obj(stamp="h1", rv="21"), cm)
    assert (
        edit_marker(obj(stamp=None, rv="7")) == "r7"
        and edit_marker(obj(stamp=None, rv="7", generation=3)) == "g3"
    )
    assert newer("11", "9") and not newer("9", "11") and newer("b", "a")


def _status(history: list[dict[str, Any]], **rollout: Any) -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "weights": {"v1": 95, "v2": 5},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "rollout": {
            "phase": "Progressing",
            "stepIndex": 0,
            "failures": 0,
            "analyzedAt": "T1",
            "lastAnalysis": {"requests": 1},
            "history": history,
            **rollout,
        },
    }


def test_a_repeated_hold_is_not_material_but_decisions_are() -> None:
    start = {
        "action": "start",
        "reason": "canary started",
        "at": "T0",
        "weights": {"v1": 95, "v2": 5},
        "actor": "controller",
    }
    hold = {
        "action": "hold",
        "reason": "only 12 of 100 requests needed",
        "at": "T1",
        "weights": {"v1": 95, "v2": 5},
        "actor": "controller",
    }
    before = _status([start, hold])
    again = _status(
        [start, {**hold, "at": "T2", "reason": "only 40 of 100 requests needed"}],
        analyzedAt="T2",
        lastAnalysis={"requests": 40},
    )
    assert status.material(again) == status.material(before)
    assert status.hold_reason(str(hold["reason"])) == "only # of # requests needed"
    # the first hold after a decision, another reason, a failure, a step, a condition: all material
    assert status.material(_status([start])) != status.material(before)
    other = _status([start, {**hold, "reason": "p99 latency unknown"}])
    assert status.material(other) != status.material(before)
    assert status.material(_status([start, hold], failures=1)) != status.material(before)
    assert status.material(_status([start, hold], stepIndex=1)) != status.material(before)
    unready = copy.deepcopy(before)
    unready["conditions"][0]["status"] = "False"
    assert status.material(unready) != status.material(before)
    assert status.material(None) == {}


def test_next_analysis_in() -> None:
    md = parse_deployment(
        {
            "apiVersion": "serving.ferryman.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {
                "versions": [
                    {"name": "v1", "uri": "s3://b/v1.onnx"},
                    {"name": "v2", "uri": "s3://b/v2.onnx"},
                ],
                "traffic": {
                    "strategy": "canary",
                    "stable": "v1",
                    "candidate": "v2",
                    "canary": {"intervalSeconds": 30},
                },
            },
        }
    )
    state = RolloutState(
        strategy=Strategy.canary,
        phase=Phase.progressing,
        stable="v1",
        candidate="v2",
        weights={"v1": 95, "v2": 5},
        step_index=0,
        step_started_at=100.0,
        analyzed_at=110.0,
    )
    assert next_analysis_in(state, md, now=120.0) == 20.0
    assert next_analysis_in(state, md, now=150.0) == -10.0  # overdue: the caller runs it at once
    stable = RolloutState(
        strategy=Strategy.canary, phase=Phase.stable, stable="v1", candidate=None, weights={"v1": 100}
    )
    assert next_analysis_in(stable, md, now=120.0) is None


def test_backoff_delay() -> None:
    assert backoff_delay(1, base=0.2, cap=10, rand=lambda: 0.0) == 0.1
    assert backoff_delay(1, base=0.2, cap=10, rand=lambda: 1.0) == 0.2
    assert backoff_delay(4, base=0.2, cap=10, rand=lambda: 1.0) == 1.6
    assert backoff_delay(20, base=0.2, cap=10, rand=lambda: 1.0) == 10
    assert backoff_delay(1, base=0.2, cap=10, retry_after="3") == 3.0  # the server's Retry-After wins
    assert backoff_delay(1, base=0.2, cap=10, retry_after="120") == 10  # capped
    assert (
        backoff_delay(1, base=0.2, cap=10, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", rand=lambda: 1.0)
        == 0.2
    )


def test_only_ready_message() -> None:
    base = _status([])
    progress = copy.deepcopy(base)
    base["conditions"][0].update(status="False", message="version v1: 0/1 replicas ready")
    progress["conditions"][0].update(status="False", message="version v1: 1/1 replicas ready; gateway: 0/1")
    assert status.only_ready_message(progress, base)
    ready = copy.deepcopy(progress)
    ready["conditions"][0].update(status="True", message="serving")
    assert not status.only_ready_message(ready, base)  # becoming Ready is written at once
    moved = copy.deepcopy(progress)
    moved["weights"] = {"v1": 75, "v2": 25}
    assert not status.only_ready_message(moved, base)  # and so is anything else
    assert not status.only_ready_message(base, base)
