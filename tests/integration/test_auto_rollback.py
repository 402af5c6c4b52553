"""The controller decides on its own: a candidate that breaks the p99 budget is rolled back, a healthy one is
promoted through every step — and no client request fails in either run (clients run through every switch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers import models
from tests.helpers.gateway import Client, Load, actions, ferryman_up, phase_reached, wait_until, write_spec

THRESHOLD = 2


def _canary(
    versions: dict[str, Any], *, candidate: str, steps: list[int], min_requests: int, p99_ms: float
) -> dict[str, Any]:
    return {
        "versions": versions,
        "budget": {"p99Ms": p99_ms, "maxErrorRate": 0.01},
        "traffic": {
            "strategy": "canary",
            "stable": "v1",
            "candidate": candidate,
            "canary": {
                "steps": steps,
                "intervalSeconds": 1.0,
                "failureThreshold": THRESHOLD,
                "minRequests": min_requests,
            },
        },
    }


def test_a_candidate_over_the_p99_budget_is_rolled_back_automatically(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    slow = models.slow_model(
        tmp_path / "slow.onnx", target_seconds=0.3
    )  # 3x the budget: calibration on a loaded box can be 1.6x off
    versions = {"v1": sample_models.versions["v1"], "slow": slow}
    spec = write_spec(
        tmp_path / "deployment.yaml",
        **_canary(versions, candidate="slow", steps=[50, 100], min_requests=5, p99_ms=100),
    )
    with ferryman_up(spec, tmp_path / "state") as up:
        with Load(up.url, traffic, threads=4, max_seconds=120, pace=0.01) as load:
            rolled_back = wait_until(
                phase_reached(up, "RolledBack"),
                timeout=90,
                interval=0.25,
                what="the automatic rollback",
                detail=up.status,
            )
            # once the decision is in, every new request goes to stable
            decided, n = time.monotonic(), load.count()
            wait_until(lambda: load.count() >= n + 40, timeout=60, what="traffic after the rollback")
        outcomes = load.outcomes
        with Client(up.url) as client:
            after = [client.version_of(traffic[i]) for i in range(50)]

    assert [o for o in outcomes if o.status != 200] == [], "a client request failed during the rollout"
    assert {o.version for o in outcomes[:n]} >= {"slow"}, "the candidate never got traffic"
    assert set(after) == {"v1"}
    assert {o.version for o in outcomes if o.sent > decided} == {"v1"}

    assert rolled_back["weights"] == {"v1": 100} and rolled_back["stable"] == "v1"
    history = rolled_back["history"]
    assert "advance" not in actions(rolled_back) and "promote" not in actions(rolled_back)
    # exactly THRESHOLD failed analyses: THRESHOLD - 1 holds counting failures, then the rollback
    failed = [h for h in history if h["reason"].startswith("analysis failed")]
    assert [h["action"] for h in failed] == ["hold"] * (THRESHOLD - 1) + ["rollback"]
    final = history[-1]
    assert final["action"] == "rollback" and final["actor"] == "controller"
    assert "p99" in final["reason"] and f"threshold {THRESHOLD}" in final["reason"]
    last = rolled_back["lastAnalysis"]
    assert last["outcome"] == "fail" and last["version"] == "slow"
    p99 = next(c for c in last["checks"] if c["name"] == "p99_latency_ms")
    assert p99["ok"] is False and p99["value"] > 100


def test_a_healthy_candidate_is_promoted_through_every_step(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    steps = [20, 50, 100]
    # a generous budget: this run is about the promotion path, on a shared and busy machine
    spec = write_spec(
        tmp_path / "deployment.yaml",
        **_canary(sample_models.versions, candidate="v2", steps=steps, min_requests=20, p99_ms=250),
    )
    with ferryman_up(spec, tmp_path / "state") as up:
        with Load(up.url, traffic, threads=4, max_seconds=150, pace=0.01) as load:
            promoted = wait_until(
                phase_reached(up, "Promoted"),
                timeout=120,
                interval=0.25,
                what="the automatic promotion",
                detail=up.status,
            )
            decided, n = time.monotonic(), load.count()
            wait_until(lambda: load.count() >= n + 40, timeout=60, what="traffic after the promotion")
        outcomes = load.outcomes

    assert [o for o in outcomes if o.status != 200] == [], "a client request failed during the rollout"
    assert {o.version for o in outcomes if o.sent > decided} == {"v2"}
    decisions = [h for h in promoted["history"] if h["action"] != "hold"]
    assert [h["action"] for h in decisions] == ["start", "advance", "advance", "promote"]
    assert [h["weights"] for h in decisions] == [
        {"v1": 80, "v2": 20},
        {"v1": 50, "v2": 50},
        {"v2": 100},
        {"v2": 100},
    ]
    assert all(h["actor"] == "controller" for h in decisions)
    assert "within budget" in decisions[-1]["reason"]
    assert promoted["stable"] == "v2" and promoted["candidate"] is None and promoted["previousStable"] == "v1"
