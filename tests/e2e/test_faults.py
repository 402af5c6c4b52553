"""Faults on the real node while the host keeps calling the gateway's ClusterIP.

* A version pod deleted under load: its Deployment has two replicas, so the Service always has a ready
  endpoint. The pod is removed from the endpoints when it starts terminating and keeps serving for its
  preStop drain (5 s) before the server stops, and the gateway retries a request whose connection broke
  before any answer (inference has no side effects) on a fresh connection. So no request should fail:
  the bound asserted is zero, and the count is reported.
* The operator pod deleted mid-rollout: the Deployment starts a new pod, which takes the Lease (the old
  one releases it on SIGTERM) and continues the rollout saved in ``status.rollout`` at the step it had
  reached (no second start, steps only go up) until the candidate is promoted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.cluster.controlplane import ControlPlane
from tests.e2e import mdep, scenarios
from tests.e2e.client import Background
from tests.e2e.kube import pod_ready, pods, wait_for
from tests.e2e.modelstore import ModelStore
from tests.e2e.release import Release
from tests.e2e.test_rollouts import _deploy

NATIVE = scenarios.BACKENDS[0]


def test_version_pod_deleted_under_load(
    control_plane: ControlPlane, models_ns: str, model_store: ModelStore, sample_spec: Path, rows: np.ndarray
) -> None:
    cp, name = control_plane, "breast-cancer"
    manifest = scenarios.model_deployment(
        sample_spec,
        model_store,
        name=name,
        backend=NATIVE,
        budget_ms=500,
        traffic=scenarios.static("v1"),
        replicas={"v1": 2},
    )
    manifest["spec"]["versions"] = manifest["spec"]["versions"][:1]
    base = _deploy(cp, models_ns, manifest, NATIVE)
    selector = f"serving.ferryman.dev/deployment={name},serving.ferryman.dev/version=v1"
    before = {p["metadata"]["name"] for p in pods(cp, models_ns, selector)}
    assert len(before) == 2, before

    with Background(base, name, rows, rate=25) as client:
        time.sleep(3)
        victim = sorted(before)[0]
        t0 = time.monotonic()
        cp.kubectl("-n", models_ns, "delete", "pod", victim, "--wait=false")

        def replaced() -> bool:
            now = pods(cp, models_ns, selector)
            names = {p["metadata"]["name"] for p in now}
            return victim not in names and sum(pod_ready(p) for p in now) == 2

        wait_for(replaced, timeout=240, what=f"{victim} to be gone and replaced by a ready pod")
        time.sleep(3)
        stats = client.stop()
    took = time.monotonic() - t0
    print(
        f"version pod deleted under load: {len(stats.failures)} failed of {stats.total} requests "
        f"({took:.0f} s from delete to a replacement ready)"
    )
    assert stats.versions["v1"] > 0
    assert not stats.failures, f"{len(stats.failures)} of {stats.total} failed: {stats.failures[:5]}"


def _steps_reached(history: list[dict[str, Any]]) -> list[int]:
    """The candidate's weight after each advance, in order."""
    return [h["weights"].get("v2", 0) for h in history if h["action"] in ("start", "advance", "promote")]


def test_operator_pod_deleted_mid_rollout(
    control_plane: ControlPlane,
    release: Release,
    models_ns: str,
    model_store: ModelStore,
    sample_spec: Path,
    rows: np.ndarray,
) -> None:
    cp, name = control_plane, "breast-cancer"
    manifest = scenarios.model_deployment(
        sample_spec,
        model_store,
        name=name,
        backend=NATIVE,
        budget_ms=500,
        traffic=scenarios.canary([25, 50, 75, 100], interval=8, min_requests=10),
    )
    base = _deploy(cp, models_ns, manifest, NATIVE)
    [old] = release.operator_pods()
    old_name = old["metadata"]["name"]

    with Background(base, name, rows, rate=15) as client:

        def advanced() -> dict[str, Any] | None:
            r = mdep.rollout(cp, models_ns, name)
            return r if any(h["action"] == "advance" for h in r.get("history", [])) else None

        at_failover = wait_for(
            advanced,
            timeout=300,
            what="the rollout's first advance",
            on_timeout=lambda: mdep.history(mdep.status(cp, models_ns, name)),
        )
        assert at_failover["phase"] == "Progressing", at_failover
        cp.kubectl("-n", release.namespace, "delete", "pod", old_name, "--wait=false")

        def new_leader() -> str | None:
            running = [
                p for p in release.operator_pods() if p["metadata"]["name"] != old_name and pod_ready(p)
            ]
            holder = release.lease()["spec"].get("holderIdentity")
            return holder if running and holder == running[0]["metadata"]["name"] else None

        leader = wait_for(new_leader, timeout=180, what="a new operator pod holding the Lease")
        st = mdep.wait_phase(cp, models_ns, name, ("Promoted",), bad=("RolledBack", "Degraded"), timeout=420)
        stats = client.stop()

    history = st["rollout"]["history"]
    assert [h["action"] for h in history].count("start") <= 1, mdep.history(st)
    reached = _steps_reached(history)
    assert reached == sorted(reached) and reached[-1] == 100, mdep.history(st)
    # the new leader went on from status.rollout: the steps taken before the failover are still the start of
    # the history (nothing restarted from the first step; stepIndex reads -1 once Promoted)
    before = _steps_reached(at_failover["history"])
    assert reached[: len(before)] == before and len(reached) > len(before), mdep.history(st)
    events = cp.get_json(
        "-n",
        models_ns,
        "events",
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )["items"]
    started = [e for e in events if e.get("reason") == "RolloutStarted"]
    assert len(started) == 1, [(e.get("reason"), e.get("reportingInstance")) for e in events]
    promoted = [e for e in events if e.get("reason") == "Promoted"]
    assert promoted and promoted[-1].get("reportingInstance") == leader, [
        (e.get("reason"), e.get("reportingInstance")) for e in events
    ]
    assert not stats.failures, f"{len(stats.failures)} of {stats.total} failed: {stats.failures[:5]}"
