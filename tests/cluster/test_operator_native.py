"""The operator on the real control plane with the native backend: the sample ModelDeployment becomes
Deployments/Services per version, the gateway and its routes ConfigMap, with Ready (KWOK) pods; a new
version walks its canary steps on passing analyses read from a real Prometheus and is promoted; a
version that breaks the latency budget is rolled back; deleting the resource removes everything.

The operator runs as a subprocess with the chart's least-privilege RBAC (a ServiceAccount token).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman.routes import table_from_dict
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    MetricsExporter,
    Profile,
    condition_is,
    events,
    get_md,
    operator_kubeconfig,
    routes_of,
    sample_manifest,
    start_operator,
    wait_for,
)
from tests.helpers.prometheus import prometheus

pytestmark = pytest.mark.cluster

NAME = "breast-cancer"
LABEL = f"serving.ferryman.dev/deployment={NAME}"


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    exp = MetricsExporter().start()
    try:
        yield exp
    finally:
        exp.stop()


def canary(candidate: str, *, steps: list[int], interval: float = 2.0, stable: str = "v1") -> dict[str, Any]:
    return {
        "strategy": "canary",
        "stable": stable,
        "candidate": candidate,
        "canary": {"steps": steps, "intervalSeconds": interval, "failureThreshold": 2, "minRequests": 20},
    }


def actions(md: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
    """The rollout's decisions other than data holds, in order: (action, weights)."""
    return [(h["action"], h["weights"]) for h in md["status"]["rollout"]["history"] if h["action"] != "hold"]


def owned_objects(cp: ControlPlane, namespace: str) -> dict[str, list[dict[str, Any]]]:
    return {
        kind: cp.get_json("-n", namespace, kind, "-l", LABEL)["items"]
        for kind in ("deployments", "services", "configmaps")
    }


def test_sample_becomes_ready_idempotent_and_deletion_cascades(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    kubeconfig = operator_kubeconfig(crd, namespace, tmp_path)
    with start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-a"):
        doc = sample_manifest(
            sample_spec, name=NAME, base_url=model_url, traffic={"strategy": "static", "stable": "v1"}
        )
        crd.apply(doc, "-n", namespace)
        md = wait_for(lambda: condition_is(crd, namespace, NAME, "Ready", "True"), timeout=90, what="Ready")
        status = md["status"]
        assert status["phase"] == "Stable"
        assert status["trafficSplit"] == "v1 100%"
        assert status["weights"] == {"v1": 100}
        assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local:8080"
        assert status["observedGeneration"] == md["metadata"]["generation"]

        objects = owned_objects(crd, namespace)
        assert sorted(d["metadata"]["name"] for d in objects["deployments"]) == [
            f"{NAME}-gateway",
            f"{NAME}-v1",
            f"{NAME}-v2",
        ]
        assert sorted(s["metadata"]["name"] for s in objects["services"]) == [
            NAME,
            f"{NAME}-v1",
            f"{NAME}-v2",
        ]
        assert sorted(c["metadata"]["name"] for c in objects["configmaps"]) == [
            f"{NAME}-routes",
            f"{NAME}-versions",
        ]
        uid = md["metadata"]["uid"]
        for items in objects.values():
            for obj in items:
                (ref,) = obj["metadata"]["ownerReferences"]
                assert (ref["uid"], ref["controller"], ref["kind"]) == (uid, True, "ModelDeployment")
        for d in objects["deployments"]:
            assert d["status"]["availableReplicas"] == d["spec"]["replicas"] == 1
        pods = crd.get_json("-n", namespace, "pods", "-l", LABEL)["items"]
        assert len(pods) == 3  # admitted under the namespace's restricted Pod Security level
        for pod in pods:
            assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

        table = table_from_dict(routes_of(crd, namespace, NAME))
        assert table.weights == (("v1", 100),)
        assert routes_of(crd, namespace, NAME)["backends"] == {
            v: f"http://{NAME}-{v}.{namespace}.svc.cluster.local:8080" for v in ("v1", "v2")
        }
        assert "Ready" in [e["reason"] for e in events(crd, namespace, NAME)]

        # idempotent: further reconciles (every 0.5 s) write nothing
        before = {
            o["metadata"]["name"] + o["kind"]: o["metadata"]["resourceVersion"]
            for items in owned_objects(crd, namespace).values()
            for o in items
        }
        before_md = get_md(crd, namespace, NAME)["metadata"]["resourceVersion"]
        time.sleep(3)  # six resyncs
        after = {
            o["metadata"]["name"] + o["kind"]: o["metadata"]["resourceVersion"]
            for items in owned_objects(crd, namespace).values()
            for o in items
        }
        assert after == before
        assert get_md(crd, namespace, NAME)["metadata"]["resourceVersion"] == before_md

        # scaling a version is applied without starting a new rollout
        doc["spec"]["versions"][0]["replicas"] = 2
        crd.apply(doc, "-n", namespace)
        wait_for(
            lambda: (
                crd.get_json("-n", namespace, "deployment", f"{NAME}-v1")["status"].get("readyReplicas") == 2
            ),
            timeout=60,
            what="v1 scaled to 2 ready replicas",
        )
        md = wait_for(
            lambda: (m := get_md(crd, namespace, NAME))["status"]["observedGeneration"] == 2 and m,
            timeout=30,
            what="the scaled generation observed",
        )
        assert [h["action"] for h in md["status"]["rollout"]["history"]] == ["start"]

    # the operator is gone: the garbage collector alone removes what it created
    crd.kubectl("-n", namespace, "delete", "modeldeployment", NAME)
    wait_for(
        lambda: not any(owned_objects(crd, namespace).values()),
        timeout=60,
        what="owned objects to be garbage-collected",
    )
    wait_for(
        lambda: crd.get_json("-n", namespace, "pods", "-l", LABEL)["items"] == [],
        timeout=60,
        what="pods to be deleted",
    )


def test_canary_promotes_a_good_version_and_rolls_back_a_bad_one(
    crd: ControlPlane,
    namespace: str,
    tmp_path: Path,
    sample_spec: Path,
    model_url: str,
    exporter: MetricsExporter,
) -> None:
    """Two ModelDeployments rolled out side by side by one operator: "good" gets a new version whose
    analyses pass (promoted through every step), "bad" a candidate whose p99 breaks the budget (rolled
    back)."""
    exporter.serve("good", "v1", Profile(latency_seconds=0.01), route="stable")
    exporter.serve("good", "v2", Profile(latency_seconds=0.012), route="candidate")
    exporter.serve("bad", "v1", Profile(latency_seconds=0.01), route="stable")
    exporter.serve(
        "bad", "v2", Profile(latency_seconds=0.3), route="candidate"
    )  # p99 ~300 ms > 100 ms budget
    kubeconfig = operator_kubeconfig(crd, namespace, tmp_path)
    with (
        prometheus({"ferryman": [exporter.address]}, namespace=namespace) as prom,
        start_operator(
            crd, namespace, kubeconfig=kubeconfig, identity="op-a", env={"FERRYMAN_PROMETHEUS_URL": prom.url}
        ),
    ):
        good = sample_manifest(
            sample_spec, name="good", base_url=model_url, traffic={"strategy": "static", "stable": "v1"}
        )
        v2 = good["spec"]["versions"].pop()
        crd.apply(good, "-n", namespace)
        bad = sample_manifest(
            sample_spec, name="bad", base_url=model_url, traffic=canary("v2", steps=[25, 50, 100])
        )
        crd.apply(bad, "-n", namespace)
        wait_for(
            lambda: condition_is(crd, namespace, "good", "Ready", "True"), timeout=90, what="good/v1 Ready"
        )

        good["spec"]["versions"].append(v2)  # a new version, rolled out as a canary
        good["spec"]["traffic"] = canary("v2", steps=[25, 50, 100])
        crd.apply(good, "-n", namespace)
        promoted = wait_for(
            lambda: (m := get_md(crd, namespace, "good")).get("status", {}).get("phase") == "Promoted" and m,
            timeout=120,
            what="promotion of good/v2",
        )
        rolled_back = wait_for(
            lambda: (m := get_md(crd, namespace, "bad")).get("status", {}).get("phase") == "RolledBack" and m,
            timeout=60,
            what="rollback of bad/v2",
        )

    # good: every step on a passing analysis, then promoted
    assert actions(promoted) == [
        ("start", {"v1": 100}),
        ("start", {"v1": 75, "v2": 25}),
        ("advance", {"v1": 50, "v2": 50}),
        ("advance", {"v2": 100}),
        ("promote", {"v2": 100}),
    ]
    status = promoted["status"]
    assert status["weights"] == {"v2": 100} and status["stable"] == "v2" and "candidate" not in status
    analysis = status["rollout"]["lastAnalysis"]
    assert analysis["outcome"] == "pass" and analysis["version"] == "v2" and analysis["requests"] >= 20
    assert {c["name"] for c in analysis["checks"]} >= {"p99_latency_ms", "error_rate"}
    table = table_from_dict(routes_of(crd, namespace, "good"))
    assert table.weights == (("v2", 100),) and table.stable == "v2"
    reasons = [e["reason"] for e in events(crd, namespace, "good")]
    assert [r for r in reasons if r in ("RolloutStarted", "StepAdvanced", "Promoted")][-4:] == [
        "RolloutStarted",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Progressing"]["status"] == "False" and conds["Progressing"]["reason"] == "Promoted"
    assert conds["Ready"]["status"] == "True"

    # bad: two failed analyses (failureThreshold 2), then all traffic back to v1
    assert actions(rolled_back) == [("start", {"v1": 75, "v2": 25}), ("rollback", {"v1": 100})]
    status = rolled_back["status"]
    assert status["weights"] == {"v1": 100} and status["stable"] == "v1"
    assert status["rollout"]["lastAnalysis"]["outcome"] == "fail"
    assert "p99_latency_ms" in status["rollout"]["lastAnalysis"]["reason"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Progressing"]["reason"] == "RolledBack"
    assert conds["Ready"]["status"] == "True"  # v1 keeps serving
    assert conds["Degraded"]["status"] == "False"
    assert table_from_dict(routes_of(crd, namespace, "bad")).weights == (("v1", 100),)
    evs = events(crd, namespace, "bad")
    failed = [e for e in evs if e["reason"] == "AnalysisFailed"]
    rolled = [e for e in evs if e["reason"] == "RolledBack"]
    assert failed and failed[0]["type"] == "Warning" and "p99_latency_ms" in failed[0]["message"]
    assert len(rolled) == 1 and rolled[0]["type"] == "Warning"
    assert "analysis failed 2x" in rolled[0]["message"]
