"""The operator is watch-driven and quiet (issue 22), on the real apiserver:

* idle: canaries whose analysis holds every second (no Prometheus) make no write at all — no status, no
  apply, no Event — and no GET, while the operator keeps analysing;
* a change converges through watch events alone (the resync is an hour, and the caches never list again):
  a spec edit, an owned object deleted or edited by hand;
* an edit made while no operator ran is repaired by the next one, which applies each object once
  (a no-op for the untouched ones: their resourceVersion stays);
* a 429 while the caches list and while pruning is retried at the request (after Retry-After), so the
  reconcile still converges.

(The resourceVersion precondition of status writes: test_operator_robustness.py.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.apiserver_proxy import FaultProxy, proxied_kubeconfig
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    condition_is,
    events,
    get_md,
    operator_kubeconfig,
    routes_of,
    start_operator,
    wait_for,
)

pytestmark = pytest.mark.cluster

LABEL = "app.kubernetes.io/managed-by=ferryman-operator"
KINDS = ("deployments", "services", "configmaps")


@pytest.fixture
def kubeconfig(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Path]:
    yield operator_kubeconfig(crd, namespace, tmp_path)


def canary(name: str, *, interval: float = 1.0, v1_replicas: int = 1) -> dict[str, Any]:
    """A canary with s3:// models (nothing for the operator to fetch; KWOK makes the pods ready)."""
    return {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "runtime": "native",
            "versions": [
                {"name": "v1", "uri": f"s3://models/{name}/v1/model.onnx", "replicas": v1_replicas},
                {"name": "v2", "uri": f"s3://models/{name}/v2/model.onnx"},
            ],
            "traffic": {
                "strategy": "canary",
                "stable": "v1",
                "candidate": "v2",
                "canary": {"intervalSeconds": interval},
            },
        },
    }


def versions(cp: ControlPlane, namespace: str) -> dict[str, str]:
    """resourceVersion of every ModelDeployment and every object the operator owns."""
    out = {
        f"md/{m['metadata']['name']}": m["metadata"]["resourceVersion"]
        for m in cp.get_json("-n", namespace, "modeldeployments")["items"]
    }
    for kind in KINDS:
        for o in cp.get_json("-n", namespace, kind, "-l", LABEL)["items"]:
            out[f"{kind}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return out


def held(cp: ControlPlane, namespace: str, name: str) -> bool:
    md = get_md(cp, namespace, name)
    ready = condition_is(cp, namespace, name, "Ready", "True") is not None
    history = ((md.get("status") or {}).get("rollout") or {}).get("history") or []
    return ready and any(h["action"] == "hold" for h in history)


def test_idle_is_quiet_and_changes_converge_through_watches(
    crd: ControlPlane, namespace: str, kubeconfig: Path
) -> None:
    names = ["alpha", "beta", "gamma"]
    with start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-watch") as op:
        crd.apply([{**canary(n), "metadata": {"name": n, "namespace": namespace}} for n in names])
        for n in names:  # Ready, and the first analysis hold (no Prometheus) written once
            wait_for(functools.partial(held, crd, namespace, n), timeout=90, what=f"{n} Ready and holding")

        # -- idle: the analysis keeps running every second, and nothing is written or read ---------------
        before, events_before, health_before = (
            versions(crd, namespace),
            len(events(crd, namespace, "alpha")),
            op.health(),
        )
        wait_for(
            lambda: op.health()["reconciles"] >= health_before["reconciles"] + 3 * len(names),
            timeout=60,
            what="analysis passes while idle",
        )
        health = op.health()
        assert versions(crd, namespace) == before
        assert len(events(crd, namespace, "alpha")) == events_before
        assert health["writes"] == health_before["writes"]
        for verb in ("GET", "POST", "PATCH", "DELETE"):
            assert health["requests"].get(verb, 0) == health_before["requests"].get(verb, 0), verb
        # PUTs are the Lease renewals only (status writes would be PUTs too, and writes did not move)
        assert health["lists"] == health_before["lists"]

        # -- a spec edit converges through the ModelDeployment's watch --------------------------------------
        lists = health["lists"]
        crd.apply({**canary("alpha", v1_replicas=2), "metadata": {"name": "alpha", "namespace": namespace}})
        wait_for(
            lambda: (
                crd.get_json("-n", namespace, "deployment", "alpha-v1")["status"].get("readyReplicas") == 2
            ),
            timeout=60,
            what="alpha-v1 scaled to 2",
        )
        md = wait_for(
            lambda: (m := get_md(crd, namespace, "alpha"))["status"].get("observedGeneration") == 2 and m,
            timeout=30,
            what="generation 2 observed",
        )
        assert md["metadata"]["generation"] == 2

        # -- an owned object deleted by hand comes back (its watch's DELETED event) --------------------------
        uid = crd.get_json("-n", namespace, "service", "beta-v2")["metadata"]["uid"]
        crd.kubectl("-n", namespace, "delete", "service", "beta-v2")
        wait_for(
            lambda: crd.get_json("-n", namespace, "service", "beta-v2")["metadata"]["uid"] != uid,
            timeout=30,
            what="beta-v2 Service re-created",
        )

        # -- an owned object edited by hand is repaired (its watch's MODIFIED event) -------------------------
        good = routes_of(crd, namespace, "gamma")
        patch = {"data": {"routes.json": json.dumps({**good, "weights": [{"version": "v2", "weight": 100}]})}}
        crd.kubectl(
            "-n", namespace, "patch", "configmap", "gamma-routes", "--type=merge", "-p", json.dumps(patch)
        )
        wait_for(lambda: routes_of(crd, namespace, "gamma") == good, timeout=30, what="gamma-routes repaired")
        assert op.health()["lists"] == lists  # every change came through the running watches


def test_an_edit_made_while_no_operator_ran_is_repaired(
    crd: ControlPlane, namespace: str, kubeconfig: Path
) -> None:
    with start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-before"):
        crd.apply({**canary("delta"), "metadata": {"name": "delta", "namespace": namespace}})
        wait_for(lambda: held(crd, namespace, "delta"), timeout=90, what="delta Ready and holding")
    # the operator is gone: edit one owned object; the stamp it carries still matches the spec
    good = routes_of(crd, namespace, "delta")
    patch = {"data": {"routes.json": json.dumps({**good, "weights": [{"version": "v2", "weight": 100}]})}}
    crd.kubectl(
        "-n", namespace, "patch", "configmap", "delta-routes", "--type=merge", "-p", json.dumps(patch)
    )
    before = versions(crd, namespace)
    with start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-after") as op:
        wait_for(lambda: routes_of(crd, namespace, "delta") == good, timeout=60, what="delta-routes repaired")
        wait_for(lambda: op.health()["writes"] >= 1, timeout=30, what="the re-applies counted")
        after = versions(crd, namespace)
    untouched = {k for k in before if k.startswith(KINDS) and k != "configmaps/delta-routes"}
    assert untouched, before
    # every other object was applied again without a change, which the apiserver does not write
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}


def test_a_429_while_listing_and_pruning_is_retried(
    crd: ControlPlane, namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    with FaultProxy(crd) as proxy:
        proxy.fail("GET", rf"^/apis/apps/v1/namespaces/{namespace}/deployments\?(?!.*watch=)", times=2)
        config = proxied_kubeconfig(kubeconfig, proxy, tmp_path / "proxied.kubeconfig")
        with start_operator(crd, namespace, kubeconfig=config, identity="op-429") as op:
            crd.apply(
                {**canary("delta", interval=3600), "metadata": {"name": "delta", "namespace": namespace}}
            )
            wait_for(
                lambda: condition_is(crd, namespace, "delta", "Ready", "True"), timeout=90, what="delta Ready"
            )

            # the next reconcile prunes v2 (removed from the spec); the apiserver refuses the deletes twice
            proxy.fail("DELETE", rf"/namespaces/{namespace}/(deployments|services)/delta-v2$", times=2)
            doc = canary("delta")
            doc["spec"]["versions"].pop()
            doc["spec"]["traffic"] = {"strategy": "static", "stable": "v1"}
            crd.apply({**doc, "metadata": {"name": "delta", "namespace": namespace}})
            wait_for(
                lambda: (
                    not crd.get_json(
                        "-n",
                        namespace,
                        "deployments,services",
                        "-l",
                        f"{LABEL},serving.ferryman.dev/version=v2",
                    )["items"]
                ),
                timeout=60,
                what="delta-v2 pruned",
            )
            md = wait_for(
                lambda: (
                    condition_is(crd, namespace, "delta", "Ready", "True")
                    if get_md(crd, namespace, "delta")["status"].get("observedGeneration") == 2
                    else None
                ),
                timeout=30,
                what="generation 2 Ready",
            )
            assert md["status"]["weights"] == {"v1": 100}
            health = op.health()
    injected = [(m, status) for m, _target, status in proxy.injected]
    assert injected.count(("GET", 429)) == 2  # the Deployments cache's first list
    assert injected.count(("DELETE", 429)) == 2
    assert health["retries"].get("429", 0) >= 4
    assert proxy.forwarded > 0  # everything else went through to the apiserver
