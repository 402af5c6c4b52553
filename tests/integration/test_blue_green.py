"""Blue-green over real HTTP: the preview answers pinned requests only, the switch is atomic, rollback
instant."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests.helpers.gateway import Client, Load, actions, ferryman_up, wait_until, write_spec


def test_preview_by_pin_then_atomic_switch_then_instant_rollback(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    # a generous budget and two strikes: this test is about the switch, on a shared and busy machine
    spec = write_spec(
        tmp_path / "deployment.yaml",
        versions=sample_models.versions,
        budget={"p99Ms": 250, "maxErrorRate": 0.01},
        traffic={
            "strategy": "blueGreen",
            "stable": "v1",
            "candidate": "v2",
            "blueGreen": {
                "analysisIntervalSeconds": 0.5,
                "minRequests": 5,
                "failureThreshold": 2,
                "autoPromote": False,
            },
        },
    )
    with ferryman_up(spec, tmp_path / "state") as up:
        rollout = up.rollout()
        assert rollout["phase"] == "Progressing" and rollout["weights"] == {"v1": 100}

        with Client(up.url) as client:
            assert {client.version_of(traffic[i]) for i in range(40)} == {"v1"}  # v2 takes no live traffic...
            # ...but the preview answers whoever pins it, by path or header
            assert {client.version_of(traffic[i], version="v2") for i in range(10)} == {"v2"}
            assert {
                client.version_of(traffic[i], headers={"x-ferryman-version": "v2"}) for i in range(10)
            } == {"v2"}

        # the pre-promotion analysis runs on the preview's (pinned) traffic, then waits for a human
        def passed() -> list[dict[str, str]]:
            return [h for h in up.rollout()["history"] if "preview passed" in h["reason"]]

        verdict = wait_until(passed, timeout=30, what="a passing preview analysis")[0]
        assert verdict["action"] == "hold" and "awaiting manual promotion" in verdict["reason"]
        assert "within budget" in verdict["reason"]
        held = up.rollout()
        assert held["phase"] == "Progressing" and held["weights"] == {"v1": 100}  # no switch without a human

        with Load(up.url, traffic, threads=4, max_seconds=120, pace=0.01) as load:
            wait_until(lambda: load.count() >= 60, timeout=60, what="traffic before the switch")
            promote_sent = time.monotonic()
            promoted = up.action("promote", reason="preview looks good")
            promote_done = time.monotonic()
            assert promoted["decision"]["weights"] == {"v2": 100}
            n = load.count()
            wait_until(lambda: load.count() >= n + 60, timeout=60, what="traffic after the switch")
            rollback_sent = time.monotonic()
            rolled = up.action("rollback", reason="undo")
            rollback_done = time.monotonic()
            n = load.count()
            wait_until(lambda: load.count() >= n + 60, timeout=60, what="traffic after the rollback")
        outcomes = load.outcomes

    assert [o for o in outcomes if o.status != 200] == [], "a client request failed during a switch"
    before = {o.version for o in outcomes if o.received < promote_sent}
    between = {o.version for o in outcomes if o.sent > promote_done and o.received < rollback_sent}
    after = {o.version for o in outcomes if o.sent > rollback_done}
    assert before == {"v1"}
    assert between == {"v2"}  # every request after the switch: the new version, never a mix
    assert after == {"v1"}  # rollback is one table swap back

    assert promoted["status"]["rollout"]["phase"] == "Promoted"
    final = rolled["status"]["rollout"]
    assert final["phase"] == "RolledBack" and final["stable"] == "v1" and final["weights"] == {"v1": 100}
    assert actions(final)[-2:] == ["promote", "rollback"]
    assert [h["actor"] for h in final["history"][-2:]] == ["admin", "admin"]
    assert final["history"][-1]["reason"] == "undo"
