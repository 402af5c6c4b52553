"""`ferryman up` as an operator meets it: restarts resume the rollout, spec edits start a new one, the CLI
controls it, the admin API wants its token, and A/B feedback turns into per-arm accuracy with a 95 % CI."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferryman.analysis import wilson_interval
from tests.helpers.gateway import (
    Client,
    Load,
    UpServer,
    actions,
    ferryman_up,
    start_up,
    traffic_rows,
    wait_until,
    write_spec,
)
from tests.helpers.servers import run_ferryman

CLI_ENV = {"USER": "tester"}
STEPS = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # many small steps: traffic never runs it to the end


def _canary(versions: dict[str, Any], *, candidate: str = "v2") -> dict[str, Any]:
    return {
        "versions": versions,
        "budget": {"p99Ms": 250, "maxErrorRate": 0.01},
        "traffic": {
            "strategy": "canary",
            "stable": "v1",
            "candidate": candidate,
            "canary": {"steps": STEPS, "intervalSeconds": 0.5, "failureThreshold": 2, "minRequests": 10},
        },
    }


def _saved(state_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state_dir / "breast-cancer.rollout.json").read_text())["state"]
    return doc


def _idle(up: UpServer, *, since: float) -> dict[str, Any]:
    """Wait for a hold for lack of data decided after ``since`` (traffic stopped then: nothing changes
    now)."""

    def holding() -> dict[str, Any] | None:
        r = up.rollout()
        last = r["history"][-1]
        idle = last["action"] == "hold" and "requests needed" in last["reason"] and last["at"] > since
        return r if idle else None

    result: dict[str, Any] = wait_until(holding, timeout=30, what="an idle hold")
    return result


def _same_rollout(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("strategy", "phase", "stable", "candidate", "stepIndex", "weights", "specHash"):
        assert a[key] == b[key], key


def test_restart_resumes_the_saved_rollout_and_a_spec_edit_starts_a_new_one(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    spec = write_spec(tmp_path / "deployment.yaml", **_canary(sample_models.versions))

    up = start_up(spec, state)
    try:
        with Load(up.url, traffic, threads=3, max_seconds=90, pace=0.01):
            wait_until(lambda: up.rollout()["stepIndex"] >= 1, timeout=60, what="the first advance")
        before = _idle(up, since=time.time())
        assert before["phase"] == "Progressing"
        assert up.stop(signal.SIGTERM) == 0  # a clean shutdown
    finally:
        up.stop(signal.SIGKILL)
    _same_rollout(_saved(state), before)

    up = start_up(spec, state)
    try:
        resumed = up.rollout()
        _same_rollout(resumed, before)
        assert actions(resumed).count("start") == 1  # resumed, not restarted
        assert actions(resumed)[: len(before["history"])] == actions(before)
        with Client(up.url) as client:  # the gateway routes with the resumed weights
            seen = Counter(client.version_of(traffic[i % len(traffic)]) for i in range(150))
        assert set(seen) == set(resumed["weights"])

        # mid-rollout, under traffic: SIGKILL gives no chance to save anything beyond the last decision
        with Load(up.url, traffic, threads=3, max_seconds=90, pace=0.01):
            wait_until(
                lambda: up.rollout()["stepIndex"] >= resumed["stepIndex"] + 1,
                timeout=60,
                what="another advance",
            )
        _idle(up, since=time.time())
        up.stop(signal.SIGKILL)
    finally:
        up.stop(signal.SIGKILL)
    killed = _saved(state)
    assert killed["phase"] == "Progressing" and killed["stepIndex"] > before["stepIndex"]

    with ferryman_up(spec, state) as up:
        after_kill = up.rollout()
        _same_rollout(after_kill, killed)
        assert actions(after_kill).count("start") == 1

        # a new version in the spec file: a new rollout of it starts, from the current stable
        versions = {**sample_models.versions, "v3": sample_models.versions["v2"]}
        write_spec(spec, **_canary(versions, candidate="v3"))
        fresh = wait_until(
            lambda: (r := up.rollout())["candidate"] == "v3" and r, timeout=60, what="the new rollout"
        )
        assert actions(fresh).count("start") == 2 and fresh["history"][-1]["action"] == "start"
        assert fresh["phase"] == "Progressing" and fresh["stepIndex"] == 0
        assert fresh["stable"] == "v1" and fresh["weights"] == {"v1": 95, "v3": 5}
        with Client(up.url) as client:
            assert client.version_of(traffic[0], version="v3") == "v3"  # the new version was loaded


def test_cli_controls_admin_token_status_json_and_ab_feedback(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    labels = np.load(Path(sample_models.directory) / "traffic_labels.npy")
    state = tmp_path / "state"
    spec = write_spec(
        tmp_path / "deployment.yaml",
        versions=sample_models.versions,
        traffic={
            "strategy": "abTest",
            "stable": "v1",
            "abTest": {"weights": {"v1": 50, "v2": 50}, "sticky": {"source": "header", "name": "x-user-id"}},
        },
    )
    cli = ["--state-dir", str(state)]
    with ferryman_up(spec, state) as up:
        # the admin API refuses anyone without the token, and changes nothing for them
        for token in ("", "not-the-token-at-all", up.token[:-1] + "x"):
            for method, path in (("GET", "/status"), ("POST", "/pause")):
                resp = up.admin(method, path, token=token)
                assert resp.status_code == 401, (token, path, resp.text)
                assert "token" in resp.json()["error"]
        assert up.rollout()["phase"] == "Running"

        paused = run_ferryman(["pause", "--reason", "freeze for the test", *cli], env=CLI_ENV)
        assert paused.returncode == 0, paused.stderr
        assert up.rollout()["phase"] == "Paused"
        with Client(up.url) as client:  # a paused A/B test keeps serving its arms
            assert client.version_of(traffic[0], headers={"x-user-id": "someone"}) in {"v1", "v2"}
        again = up.admin("POST", "/pause")
        assert again.status_code == 409 and "Paused" in again.json()["error"]
        resumed = run_ferryman(["resume", *cli], env=CLI_ENV)
        assert resumed.returncode == 0, resumed.stderr

        # A/B feedback: the caller reports the true label of answered requests
        mine: dict[str, Counter[str]] = {"v1": Counter(), "v2": Counter()}
        with Client(up.url) as client:
            answered = []
            for i in range(100):
                reply = client.infer(traffic[i], headers={"x-user-id": f"patient-{i}"})
                assert reply.status_code == 200, reply.text
                doc = reply.json()
                predicted = int(next(o for o in doc["outputs"] if o["name"] == "label")["data"][0])
                answered.append((doc["id"], doc["model_version"], predicted, int(labels[i])))
        for rid, version, predicted, label in answered[:-1]:
            resp = up.admin("POST", "/feedback", body={"id": rid, "label": label})
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"version": version, "correct": predicted == label}
            mine[version]["total"] += 1
            mine[version]["correct"] += int(predicted == label)
        rid, version, predicted, label = answered[-1]
        via_cli = run_ferryman(["feedback", rid, str(label), *cli], env=CLI_ENV)
        assert via_cli.returncode == 0, via_cli.stderr
        mine[version]["total"] += 1
        mine[version]["correct"] += int(predicted == label)

        used = up.admin("POST", "/feedback", body={"id": answered[0][0], "label": 1})
        assert used.status_code == 400 and "error" in used.json()  # each answer is scored once
        for bad in ({"id": "nope", "label": 1}, {"id": answered[1][0]}, {"id": 3, "label": 1}):
            resp = up.admin("POST", "/feedback", body=bad)
            assert resp.status_code == 400 and "error" in resp.json(), bad

        shown = run_ferryman(["status", "--json", *cli], env=CLI_ENV)
        assert shown.returncode == 0, shown.stderr
        table = run_ferryman(["status", *cli], env=CLI_ENV)
        assert table.returncode == 0, table.stderr

    doc = json.loads(shown.stdout)
    assert doc["model"] == "breast-cancer"
    rollout = doc["rollout"]
    assert rollout["phase"] == "Running" and rollout["weights"] == {"v1": 50, "v2": 50}
    steps = [(h["action"], h["actor"]) for h in rollout["history"]]
    assert steps[-2:] == [("pause", "tester"), ("resume", "tester")]
    assert rollout["history"][-2]["reason"] == "freeze for the test"
    rows = traffic_rows(doc)
    for version in ("v1", "v2"):
        accuracy = rows[(version, version)]["accuracy"]  # A/B rows are labelled by arm
        total, correct = mine[version]["total"], mine[version]["correct"]
        assert total > 10
        assert accuracy["total"] == total and accuracy["correct"] == correct
        assert accuracy["value"] == pytest.approx(correct / total)
        assert accuracy["ci95"] == pytest.approx(list(wilson_interval(correct, total)))
        assert accuracy["ci95"][0] <= accuracy["value"] <= accuracy["ci95"][1]
    for text in ("Running", "breast-cancer", "accuracy", "pause"):
        assert text in table.stdout, text
