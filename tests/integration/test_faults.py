"""Faults against real processes: dead workers, bad model files on reload, a SIGKILLed ``ferryman up``, torn
writes.

* ``ferryman serve --workers 2`` under load: SIGKILL a worker → uvicorn starts a replacement; the only
  failures are transport errors on connections the dead worker held (at most one per client thread),
  never a 5xx, and once the replacement is up every request succeeds.
* ``ferryman up``: the spec is edited to point a version at a file that has disappeared, then at a file
  that fails its sha256 → ``POST /reload`` reports the error, the old version keeps answering (its own
  outputs), and traffic under load sees no error at all; the fixed spec reloads fine.
* ``ferryman up`` SIGKILLed mid-canary (with a torn temp file left beside its state) → restarted, it resumes
  the same step, weights, step start and history.
* A process SIGKILLed while rewriting a state file leaves the old or the new content, never a mix; a state
  file truncated by something else is set aside and reported, never parsed as garbage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from ferryman.statefile import read_json
from ferryman.store import sha256_of
from tests.helpers.gateway import Client, Load, start_up, wait_until
from tests.helpers.models import reference_outputs
from tests.helpers.servers import serve_cli

MODEL = "breast-cancer"
THREADS = 4


def write_spec(
    path: Path,
    versions: dict[str, dict[str, Any]],
    traffic: dict[str, Any],
    budget: dict[str, Any] | None = None,
) -> Path:
    doc = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "versions": [{"name": v, **fields} for v, fields in versions.items()],
            "traffic": traffic,
            "budget": budget or {"p99Ms": 5000, "maxErrorRate": 0.5},
            "drift": {"enabled": False},
        },
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


# -- worker processes ---------------------------------------------------------------------------------------
def _workers(parent_pid: int) -> set[int]:
    """uvicorn's worker processes (spawned children running spawn_main; not the resource tracker)."""
    found = set()
    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_killed_worker_is_replaced_and_serving_continues(
    sample_models: Any, traffic: np.ndarray, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path / "deployment.yaml",
        {"v1": {"uri": str(sample_models.versions["v1"])}},
        {"strategy": "static"},
    )
    with serve_cli(spec, args=["--workers", "2"], timeout=120) as server:
        original = wait_until(
            lambda: w if len(w := _workers(server.process.pid)) == 2 else None, timeout=60, what="two workers"
        )
        victim = min(original)
        with Load(server.url, traffic, threads=THREADS, max_seconds=120, pace=0.005) as load:
            wait_until(lambda: load.count() >= 100, timeout=60, what="load on the workers")
            os.kill(victim, signal.SIGKILL)
            # uvicorn notices the death and starts a replacement that loads the model and serves
            replaced = wait_until(
                lambda: w if len(w := _workers(server.process.pid)) == 2 and victim not in w else None,
                timeout=90,
                what="a replacement worker",
            )
            settled = load.count()
            wait_until(lambda: load.count() >= settled + 150, timeout=60, what="traffic after the restart")
            outcomes = load.stop()
        assert replaced - original and victim not in replaced
        errors = [o for o in outcomes if o.status != 200]
        assert all(o.status == 0 for o in errors), Counter(
            o.status for o in errors
        )  # transport errors, never 5xx
        assert len(errors) <= THREADS, [o.error for o in errors]  # at most the dead worker's connections
        after = outcomes[settled:]
        assert len(after) >= 150
        assert [o for o in after if o.status != 200] == []
        assert server.alive()
        assert "Traceback" not in server.output()


# -- a reload that cannot be adopted ------------------------------------------------------------------------
def test_a_missing_or_corrupt_model_on_reload_leaves_the_old_version_serving(
    sample_models: Any, traffic: np.ndarray, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    v1 = Path(shutil.copy(sample_models.versions["v1"], models / "v1.onnx"))
    v2 = Path(shutil.copy(sample_models.versions["v2"], models / "v2.onnx"))
    good = {"v1": {"uri": str(v1), "sha256": sha256_of(v1)}, "v2": {"uri": str(v2), "sha256": sha256_of(v2)}}
    traffic_spec = {
        "strategy": "canary",
        "stable": "v1",
        "candidate": "v2",
        "canary": {"steps": [50, 100], "intervalSeconds": 3600},
    }
    spec = write_spec(tmp_path / "deployment.yaml", good, traffic_spec)
    row = traffic[:1]
    v2_says = reference_outputs(v2, {"input": row})["probabilities"]
    assert not np.allclose(v2_says, reference_outputs(v1, {"input": row})["probabilities"])

    up = start_up(spec, tmp_path / "state")
    try:
        before = up.rollout()
        gone = models / "v2-next.onnx"
        shutil.copy(v2, gone)
        gone.unlink()  # the new file disappears before the reload reads it
        corrupt = Path(shutil.copy(v1, models / "v2-corrupt.onnx"))  # v1's bytes under v2's checksum
        with Load(up.url, traffic, threads=2, max_seconds=120, pace=0.005) as load:
            for uri, expected in ((gone, "not found"), (corrupt, "checksum mismatch")):
                write_spec(spec, {**good, "v2": {"uri": str(uri), "sha256": sha256_of(v2)}}, traffic_spec)
                resp = up.admin("POST", "/reload", body={}, headers={"x-ferryman-actor": "fault-test"})
                assert resp.status_code == 503, resp.text
                error = resp.json()["error"]
                assert "'v2'" in error and expected in error, error
                # the running v2 is the one loaded at start: pinned requests get its own answers
                with Client(up.url) as client:
                    pinned = client.infer(row[0], version="v2")
                assert pinned.status_code == 200, pinned.text
                got = {o["name"]: o["data"] for o in pinned.json()["outputs"]}
                np.testing.assert_allclose(
                    np.asarray(got["probabilities"]).reshape(v2_says.shape), v2_says, rtol=1e-6
                )
                after = up.rollout()
                assert (after["weights"], after["phase"], after["specHash"]) == (
                    before["weights"],
                    before["phase"],
                    before["specHash"],
                )
            write_spec(spec, good, traffic_spec)
            resp = up.admin("POST", "/reload", body={})
            assert resp.status_code == 200, resp.text
            wait_until(lambda: load.count() >= 200, timeout=60, what="traffic across the reloads")
            outcomes = load.stop()
        assert [o for o in outcomes if o.status != 200] == []
        assert {o.version for o in outcomes} == {"v1", "v2"}
        assert up.alive()
    finally:
        up.stop()


# -- SIGKILL mid-rollout ------------------------------------------------------------------------------------
def test_sigkilled_up_resumes_its_rollout(sample_models: Any, traffic: np.ndarray, tmp_path: Path) -> None:
    versions = {v: {"uri": str(sample_models.versions[v])} for v in ("v1", "v2")}
    spec = write_spec(
        tmp_path / "deployment.yaml",
        versions,
        {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": [10, 50, 100],
                "intervalSeconds": 1.0,
                "minRequests": 40,
                "failureThreshold": 3,
            },
        },
    )
    state = tmp_path / "state"
    up = start_up(spec, state)
    try:
        with Client(up.url) as client:
            for n in range(200):  # bounded: ~400 requests at 10% give the 40 the first analysis needs
                for i in range(20):
                    assert client.infer(traffic[(n * 20 + i) % len(traffic)]).status_code == 200
                if up.rollout()["stepIndex"] >= 1:
                    break
        before = up.rollout()
        assert before["stepIndex"] == 1 and before["phase"] == "Progressing", before
        up.stop(signal.SIGKILL)
    finally:
        up.stop(signal.SIGKILL)
    state_file = state / f"{MODEL}.rollout.json"
    saved = json.loads(state_file.read_text())["state"]
    assert saved["stepIndex"] == 1
    # what a crash in the middle of the next write leaves behind: a torn temp file beside the state
    torn = state / f".{state_file.name}.crashed"
    torn.write_text(state_file.read_text()[: len(state_file.read_text()) // 2])

    up = start_up(spec, state)
    try:
        resumed = up.rollout()
        for key in ("phase", "stable", "candidate", "stepIndex", "weights", "stepStartedAt", "specHash"):
            assert resumed[key] == before[key], key
        assert resumed["history"][: len(before["history"])] == before["history"]
        assert [h["action"] for h in resumed["history"]].count("start") == 1  # resumed, not restarted
        assert "resumed rollout" in up.output()
        with Client(up.url) as client:
            answered = Counter(client.version_of(traffic[i % len(traffic)]) for i in range(60))
        assert set(answered) == {"v1", "v2"}  # the 50 % step is what serves
    finally:
        up.stop()
    assert not list(state.glob("*.corrupt-*"))


# -- torn writes --------------------------------------------------------------------------------------------
WRITER = """
import sys
from pathlib import Path
from ferryman.statefile import write_json
path = Path(sys.argv[1])
docs = [{"generation": g, "payload": [g] * 200_000} for g in (1, 2)]
write_json(path, docs[0])
print("ready", flush=True)
i = 0
while True:
    i += 1
    write_json(path, docs[i % 2])
"""


def test_a_writer_killed_mid_write_leaves_old_or_new_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for attempt in range(4):  # bounded; each kill lands somewhere in a stream of ~1 MB rewrites
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(0.05 + 0.07 * attempt)
        finally:
            writer.kill()
            writer.wait(timeout=30)
        doc = json.loads(path.read_bytes())  # whole, parseable
        assert doc["generation"] in (1, 2)
        assert doc["payload"] == [doc["generation"]] * 200_000
        assert read_json(path) == doc
    for leftover in tmp_path.glob(".state.json.*"):  # torn temp files are never mistaken for the state
        leftover.unlink()

    truncated = json.dumps({"generation": 3, "payload": [3] * 10})[
        :20
    ]  # cut by something that is not write_json
    path.write_text(truncated)
    assert read_json(path) is None  # reported and set aside for inspection, not parsed as garbage
    assert not path.exists()
    assert path.with_name("state.json.corrupt-0").read_text() == truncated
