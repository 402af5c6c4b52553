"""Two operator replicas: only the Lease holder acts; killing it mid-rollout (SIGKILL: no cleanup, the lease
is not released) lets the standby take over, and the rollout resumes from ``status`` where it was —
same rollout, next step — instead of starting again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    MetricsExporter,
    Profile,
    events,
    get_md,
    operator_kubeconfig,
    sample_manifest,
    start_operator,
    wait_for,
)
from tests.helpers.prometheus import prometheus

pytestmark = pytest.mark.cluster

NAME = "breast-cancer"


def lease_holder(cp: ControlPlane, namespace: str) -> str | None:
    lease = cp.get_json("-n", namespace, "lease", "ferryman-operator")
    holder: str | None = lease["spec"].get("holderIdentity")
    return holder


def test_standby_takes_over_mid_rollout_and_resumes(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    exporter = MetricsExporter().start()
    exporter.serve(NAME, "v1", Profile(latency_seconds=0.01), route="stable")
    exporter.serve(NAME, "v2", Profile(latency_seconds=0.01), route="candidate")
    kubeconfig = operator_kubeconfig(crd, namespace, tmp_path)
    steps = [10, 30, 60, 100]
    try:
        with prometheus({"ferryman": [exporter.address]}, namespace=namespace) as prom:
            env = {"FERRYMAN_PROMETHEUS_URL": prom.url}
            with (
                start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-a", env=env) as a,
                start_operator(
                    crd, namespace, kubeconfig=kubeconfig, identity="op-b", env=env, wait_leader=False
                ) as b,
            ):
                assert a.health()["leader"] is True
                assert b.health()["leader"] is False
                assert lease_holder(crd, namespace) == "op-a"

                traffic = {
                    "strategy": "canary",
                    "stable": "v1",
                    "candidate": "v2",
                    "canary": {
                        "steps": steps,
                        "intervalSeconds": 2,
                        "failureThreshold": 2,
                        "minRequests": 20,
                    },
                }
                crd.apply(
                    sample_manifest(sample_spec, name=NAME, base_url=model_url, traffic=traffic),
                    "-n",
                    namespace,
                )
                wait_for(
                    lambda: (
                        get_md(crd, namespace, NAME).get("status", {}).get("rollout", {}).get("stepIndex", 0)
                        >= 1
                    ),
                    timeout=90,
                    what="the canary to reach its second step",
                )
                assert b.health()["leader"] is False  # the standby never acted while the leader lived

                a.kill()
                wait_for(lambda: b.health()["leader"], timeout=30, what="op-b to acquire the lease")
                assert lease_holder(crd, namespace) == "op-b"
                md = wait_for(
                    lambda: (
                        (m := get_md(crd, namespace, NAME)).get("status", {}).get("phase") == "Promoted" and m
                    ),
                    timeout=120,
                    what="the promotion, finished by op-b",
                )
                assert "standing by" in b.logs() and "became the leader" in b.logs()
    finally:
        exporter.stop()

    history = [h for h in md["status"]["rollout"]["history"] if h["action"] != "hold"]
    # one rollout from start to promotion: resumed, never restarted
    assert [h["action"] for h in history] == ["start"] + ["advance"] * (len(steps) - 1) + ["promote"]
    assert [h["weights"].get("v2", 0) for h in history] == [*steps, 100]
    by: dict[str, list[str]] = {}
    for e in events(crd, namespace, NAME):
        by.setdefault(e["reason"], []).append(e["reportingInstance"])
    assert by["RolloutStarted"] == ["op-a"]
    assert by["Promoted"] == ["op-b"]
    assert set(by["StepAdvanced"]) <= {"op-a", "op-b"} and "op-b" in by["StepAdvanced"]
    # every decision was taken exactly once: no duplicate advance to the same step from the two replicas
    assert len(by["StepAdvanced"]) == len(steps) - 1
