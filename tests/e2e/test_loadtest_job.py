"""The chart's in-cluster Locust load test (master Job + worker Job) against a gateway on the real node,
with its latency-budget gate: the master Job completes for a budget the deployment meets and fails for
one it cannot meet (a model whose every run takes SLOW_SECONDS of compute: a p99 below that is impossible).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import ControlPlane
from tests.e2e import scenarios
from tests.e2e.conftest import SLOW_SECONDS
from tests.e2e.kube import diagnostics, wait_for
from tests.e2e.modelstore import ModelStore
from tests.e2e.release import Release
from tests.e2e.test_rollouts import _deploy


def _run(cp: ControlPlane, release: Release, *, namespace: str, p99_ms: float) -> tuple[str, dict[str, Any]]:
    """One load-test run (a helm upgrade); the master Job's final condition and its gate line."""
    release.upgrade(
        {
            "loadtest": {
                "enabled": True,
                "target": {"modelDeployment": "breast-cancer", "namespace": namespace},
                "budget": {"p99Ms": p99_ms, "maxErrorRate": 0.01},
            }
        }
    )
    run = f"r{release.helm_revision()}"
    selector = f"app.kubernetes.io/component=loadtest-master,ferryman.dev/loadtest-run={run}"

    def finished() -> tuple[str, str] | None:
        jobs = cp.get_json("-n", release.namespace, "jobs", "-l", selector)["items"]
        assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
        for c in jobs[0].get("status", {}).get("conditions", []):
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return jobs[0]["metadata"]["name"], c["type"]
        return None

    job, condition = wait_for(
        finished,
        timeout=420,
        interval=2,
        what=f"the load-test run {run} to finish",
        on_timeout=lambda: diagnostics(cp, release.namespace),
    )
    logs = cp.kubectl("-n", release.namespace, "logs", f"job/{job}", check=False).stdout
    lines = [ln for ln in logs.splitlines() if "ferryman-budget-gate:" in ln]
    assert lines, f"no gate line in the master's log:\n{logs[-3000:]}"
    gate: dict[str, Any] = json.loads(lines[-1].split("ferryman-budget-gate:", 1)[1])
    return condition, gate


def test_locust_job_gates_the_latency_budget(
    control_plane: ControlPlane,
    release: Release,
    models_ns: str,
    model_store: ModelStore,
    sample_spec: Path,
    model_files: dict[str, Any],
) -> None:
    cp = control_plane
    slow_path, slow_sha = model_files["slow"]
    manifest = scenarios.model_deployment(
        sample_spec,
        model_store,
        name="breast-cancer",
        backend=scenarios.BACKENDS[0],
        budget_ms=60_000,
        traffic=scenarios.static("v1"),
        files={"v1": (str(slow_path), slow_sha)},
    )
    manifest["spec"]["versions"] = manifest["spec"]["versions"][:1]
    _deploy(cp, models_ns, manifest, scenarios.BACKENDS[0])
    try:
        met, gate = _run(cp, release, namespace=models_ns, p99_ms=60_000)
        assert met == "Complete", gate
        assert gate["passed"] is True and gate["requests"] > 0 and gate["failures"] == 0, gate

        floor_ms = SLOW_SECONDS * 1000 / 3  # far below the model's own compute time
        missed, gate = _run(cp, release, namespace=models_ns, p99_ms=floor_ms)
        assert missed == "Failed", gate
        assert gate["passed"] is False and gate["requests"] > 0, gate
        assert gate["p99_ms"] > floor_ms, gate
    finally:
        release.upgrade({"loadtest": {"enabled": False}})
