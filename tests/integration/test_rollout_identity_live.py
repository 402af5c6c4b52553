"""`ferryman up` with its spec file edited live (issue 18): a new rollout is judged on its own drift, an edit
of analysis settings moves no traffic (and never resurrects the old stable after a promotion), and a rejected
edit is visible in `ferryman status` until a valid one lands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.helpers.gateway import ferryman_up, wait_until
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.servers import ferryman_command

MODEL = "drift-demo"
FEATURES = 4
WINDOW = 200
THRESHOLD = 0.5  # two of four features: the shifted traffic moves all four, in-distribution rows none


def rows(n: int, seed: int, *, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, FEATURES)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.linear_model import LogisticRegression

    from ferryman.examples import to_onnx

    d = tmp_path_factory.mktemp("identity-models")
    x = rows(800, seed=1)
    y = (x[:, 1] + x[:, 2] > 0).astype(np.int64)
    out = {"reference": d / "reference.npy"}
    np.save(out["reference"], x)
    for name, c in (("v1", 1.0), ("v2", 0.5)):
        path = d / f"{name}.onnx"
        path.write_bytes(to_onnx(LogisticRegression(C=c).fit(x, y), n_features=FEATURES))
        out[name] = path
    return out


def write(
    path: Path,
    models: dict[str, Path],
    traffic: dict[str, Any],
    *,
    drift: bool = True,
    raw: str | None = None,
) -> Path:
    doc = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "versions": [
                {"name": v, "uri": str(models[v]), "referenceData": str(models["reference"])}
                for v in ("v1", "v2")
            ],
            "traffic": traffic,
            "drift": {
                "enabled": drift,
                "windowSize": WINDOW,
                "everyRows": WINDOW,
                "threshold": THRESHOLD,
                "minIntervalSeconds": 0,
                "windowsPerSecond": 1000,
            },  # no rate gate: every row is kept
        },
    }
    text = raw if raw is not None else yaml.safe_dump(doc)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def canary(steps: list[int], *, interval: float = 1) -> dict[str, Any]:
    return {
        "strategy": "canary",
        "stable": "v1",
        "candidate": "v2",
        "canary": {"steps": steps, "intervalSeconds": interval, "failureThreshold": 1, "minRequests": 60},
    }


def infer(client: httpx.Client, x: np.ndarray, *, version: str) -> None:
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    r = client.post(f"/v2/models/{MODEL}/versions/{version}/infer", json=body)
    assert r.status_code == 200, r.text


def drift_of(client: httpx.Client, version: str) -> dict[str, Any]:
    report: dict[str, Any] = client.get("/drift").json()[MODEL][version]
    return report


def since_last_start(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    history = rollout["history"]
    last = max(i for i, h in enumerate(history) if h["action"] == "start")
    return list(history[last:])


def test_a_new_canary_is_not_rolled_back_for_the_previous_rollouts_drift(
    models: dict[str, Path], tmp_path: Path
) -> None:
    spec = write(tmp_path / "deployment.yaml", models, canary([5, 25, 50, 100]))
    with ferryman_up(spec, tmp_path / "state") as up, httpx.Client(base_url=up.url, timeout=60) as client:
        # rollout 1: v2 sees shifted traffic and is rolled back for drift
        for chunk in np.split(rows(WINDOW, seed=4, scale=3.0), 4):
            infer(client, chunk, version="v2")
        wait_until(
            lambda: drift_of(client, "v2")["drifted"] is True,
            timeout=300,
            interval=0.5,
            what="v2's drift run",
        )
        for x in rows(70, seed=5, scale=3.0):
            infer(client, x.reshape(1, -1), version="v2")
        rolled = wait_until(
            lambda: (r := up.rollout())["phase"] == "RolledBack" and r, timeout=60, what="the drift rollback"
        )
        assert "drift_share" in rolled["history"][-1]["reason"]

        # the user edits the spec: a fresh canary of v2 (new steps: a new rollout)
        write(spec, models, canary([10, 50, 100]))
        fresh = wait_until(
            lambda: (r := up.rollout())["phase"] == "Progressing" and r, timeout=30, what="the fresh canary"
        )
        assert fresh["weights"] == {"v1": 90, "v2": 10}
        # the previous rollout's result is gone from /drift: this rollout has not been measured yet
        assert drift_of(client, "v2")["share"] is None

        # in-distribution traffic, enough requests for a decision, fewer rows than one drift window
        for x in rows(70, seed=6):
            infer(client, x.reshape(1, -1), version="v2")

        def held_rollout() -> dict[str, Any] | None:
            r = up.rollout()
            waiting = any(
                "waiting for the first drift measurement" in h["reason"] for h in since_last_start(r)
            )
            return r if waiting or r["phase"] != "Progressing" else None

        held = wait_until(
            held_rollout, timeout=30, what="a hold for this rollout's own drift run", detail=up.rollout
        )
        assert held["phase"] == "Progressing", held  # not rolled back for the old drift share 1.0

        # this rollout's own drift run (in distribution) lets the canary advance
        for chunk in np.split(rows(WINDOW, seed=7), 4):
            infer(client, chunk, version="v2")
        wait_until(
            lambda: drift_of(client, "v2")["share"] is not None,
            timeout=300,
            interval=0.5,
            what="the fresh drift run",
        )
        assert drift_of(client, "v2")["drifted"] is False, json.dumps(drift_of(client, "v2"))

        def advanced_rollout() -> dict[str, Any] | None:
            r = up.rollout()
            return r if any(h["action"] == "advance" for h in since_last_start(r)) else None

        advanced = wait_until(advanced_rollout, timeout=60, what="the advance", detail=up.rollout)
        assert all(h["action"] != "rollback" for h in since_last_start(advanced)), advanced["history"]
        assert advanced["weights"] == {"v1": 50, "v2": 50}


def test_editing_analysis_settings_moves_no_traffic_before_or_after_promotion(
    models: dict[str, Path], tmp_path: Path
) -> None:
    spec = write(tmp_path / "deployment.yaml", models, canary([10, 50, 100], interval=3600), drift=False)
    with ferryman_up(spec, tmp_path / "state") as up:
        started = up.rollout()
        assert started["weights"] == {"v1": 90, "v2": 10}
        # mid-canary: a shorter interval applies in place, the canary does not restart
        write(spec, models, canary([10, 50, 100], interval=1800), drift=False)
        wait_until(
            lambda: (up.status()["specReload"] or {}).get("result") == "accepted",
            timeout=30,
            what="the reload",
        )
        same = up.rollout()
        assert (same["weights"], same["startedAt"], len(same["history"])) == (
            started["weights"],
            started["startedAt"],
            len(started["history"]),
        )

        up.action("promote", reason="test")
        promoted = up.rollout()
        assert (promoted["phase"], promoted["weights"], promoted["stepIndex"]) == (
            "Promoted",
            {"v2": 100},
            -1,
        )
        before = up.status()["specReload"]["at"]
        write(spec, models, canary([10, 50, 100], interval=5), drift=False)  # only canary.intervalSeconds
        wait_until(lambda: up.status()["specReload"]["at"] > before, timeout=30, what="the second reload")
        after = up.rollout()
        assert (after["phase"], after["weights"], after["stable"]) == ("Promoted", {"v2": 100}, "v2")
        assert after["history"] == promoted["history"]


def test_a_rejected_edit_is_visible_in_status_until_a_valid_one_lands(
    models: dict[str, Path], tmp_path: Path
) -> None:
    spec = write(tmp_path / "deployment.yaml", models, {"strategy": "static", "stable": "v1"}, drift=False)
    good = spec.read_text()
    state = tmp_path / "state"
    with ferryman_up(spec, state) as up, httpx.Client(base_url=up.url, timeout=30) as client:
        assert up.status()["specReload"] is None  # never edited
        write(spec, models, {}, raw=good.replace("strategy: static", "stratgy: static"))
        reload = wait_until(lambda: up.status()["specReload"], timeout=30, what="the rejected reload")
        assert reload["result"] == "rejected" and reload["fileIsRunning"] is False
        assert "stratgy" in reload["error"] and reload["at"] > 0 and reload["specFile"] == str(spec)

        cli = subprocess.run(
            [*ferryman_command(), "status", "--json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["specReload"]["result"] == "rejected"
        text = subprocess.run(
            [*ferryman_command(), "status", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert "REJECTED" in text.stdout and "stratgy" in text.stdout and "NOT what runs" in text.stdout, (
            text.stdout
        )

        samples = parse_exposition(client.get("/metrics").text)
        assert sample_sum(samples, "ferryman_spec_reloads_total", model=MODEL, result="rejected") == 1
        assert sample_sum(samples, "ferryman_spec_reload_rejected", model=MODEL) == 1

        write(spec, models, {}, raw=good)  # the fix lands
        fixed = wait_until(
            lambda: (r := up.status()["specReload"])["result"] == "accepted" and r,
            timeout=30,
            what="the accepted reload",
        )
        assert fixed["error"] is None and fixed["fileIsRunning"] is True
        samples = parse_exposition(client.get("/metrics").text)
        assert sample_sum(samples, "ferryman_spec_reload_rejected", model=MODEL) == 0
