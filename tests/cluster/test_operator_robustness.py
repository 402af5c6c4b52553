"""Bad input never crash-loops the operator: an unreachable model URI and a spec that pydantic rejects
(stored while an older, looser CRD was installed) mark the resource Degraded with the reason, leave what
was serving untouched, and recover once fixed. Status writes are conditional on ``resourceVersion``: a
concurrent writer makes the operator re-read and decide again instead of overwriting.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman.crd import crd as generated_crd
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    CRD_FILE,
    condition_is,
    events,
    get_md,
    install_crd,
    operator_kubeconfig,
    routes_of,
    sample_manifest,
    start_operator,
    wait_for,
)
from tests.helpers.ports import free_port

pytestmark = pytest.mark.cluster

NAME = "breast-cancer"


def deployments(cp: ControlPlane, namespace: str) -> set[str]:
    return {d["metadata"]["name"] for d in cp.get_json("-n", namespace, "deployments")["items"]}


def test_unreachable_model_degrades_keeps_serving_and_recovers(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    kubeconfig = operator_kubeconfig(crd, namespace, tmp_path)
    with start_operator(crd, namespace, kubeconfig=kubeconfig, identity="op-a") as op:
        doc = sample_manifest(
            sample_spec, name=NAME, base_url=model_url, traffic={"strategy": "static", "stable": "v1"}
        )
        v2 = doc["spec"]["versions"].pop()
        crd.apply(doc, "-n", namespace)
        wait_for(lambda: condition_is(crd, namespace, NAME, "Ready", "True"), timeout=90, what="v1 Ready")

        good_uri = v2["uri"]
        v2["uri"] = f"http://127.0.0.1:{free_port()}/models/v2/model.onnx"  # nothing listens there
        doc["spec"]["versions"].append(v2)
        doc["spec"]["traffic"] = {"strategy": "canary", "stable": "v1", "candidate": "v2"}
        crd.apply(doc, "-n", namespace)
        md = wait_for(
            lambda: condition_is(crd, namespace, NAME, "Degraded", "True", "ModelUnreachable"),
            timeout=60,
            what="Degraded/ModelUnreachable",
        )
        message = {c["type"]: c for c in md["status"]["conditions"]}["Degraded"]["message"]
        assert message.startswith("version v2: model http://127.0.0.1:") and "is unreachable" in message
        assert md["status"]["phase"] == "Degraded"
        assert md["status"]["weights"] == {"v1": 100}  # the last good state is kept
        assert deployments(crd, namespace) == {f"{NAME}-v1", f"{NAME}-gateway"}  # nothing new rolled out
        assert routes_of(crd, namespace, NAME)["weights"] == [{"version": "v1", "weight": 100}]
        warnings = [e for e in events(crd, namespace, NAME) if e["reason"] == "ModelUnreachable"]
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert op.alive()

        v2["uri"] = good_uri
        crd.apply(doc, "-n", namespace)
        md = wait_for(
            lambda: condition_is(crd, namespace, NAME, "Progressing", "True", "Canary"),
            timeout=60,
            what="the canary to start once v2 is reachable",
        )
        assert {c["type"]: c for c in md["status"]["conditions"]}["Degraded"]["status"] == "False"
        assert md["status"]["weights"] == {"v1": 95, "v2": 5}
        assert deployments(crd, namespace) == {f"{NAME}-v1", f"{NAME}-v2", f"{NAME}-gateway"}
        assert "Recovered" in [e["reason"] for e in events(crd, namespace, NAME)]
        assert op.alive()

        # manual control through the action annotation: a nonsense action is refused, promote is applied,
        # and the annotation is removed once handled
        annotate = ("-n", namespace, "annotate", "--overwrite", "modeldeployment", NAME)
        crd.kubectl(*annotate, "serving.ferryman.dev/action=explode")
        wait_for(
            lambda: "ActionRejected" in [e["reason"] for e in events(crd, namespace, NAME)],
            timeout=30,
            what="ActionRejected event",
        )
        crd.kubectl(*annotate, "serving.ferryman.dev/action=promote")
        md = wait_for(
            lambda: (m := get_md(crd, namespace, NAME))["status"]["phase"] == "Promoted" and m,
            timeout=30,
            what="manual promotion",
        )
        assert md["status"]["weights"] == {"v2": 100}
        assert (
            md["status"]["lastAction"]["action"] == "promote"
            and md["status"]["lastAction"]["result"] == "applied"
        )
        assert md["status"]["rollout"]["history"][-1]["actor"] == "annotation:serving.ferryman.dev/action"
        wait_for(
            lambda: (
                "serving.ferryman.dev/action"
                not in (get_md(crd, namespace, NAME)["metadata"].get("annotations") or {})
            ),
            timeout=30,
            what="the handled annotation to be removed",
        )


def test_spec_stored_under_a_looser_crd_is_degraded_not_fatal(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    """An older CRD without the CEL rules let a resource in that the current spec rejects (CRD upgrades do
    not re-validate stored objects). The operator reports it and keeps serving everything else."""
    looser = copy.deepcopy(generated_crd())
    schema = looser["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _strip_rules(schema)
    looser_file = tmp_path / "looser-crd.yaml"
    looser_file.write_text(yaml.safe_dump(looser))
    install_crd(crd, looser_file)
    try:
        bad = sample_manifest(
            sample_spec,
            name="stale",
            base_url=model_url,
            traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v9": 50}}},
        )
        crd.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(bad))
    finally:
        install_crd(crd, CRD_FILE)
    # the current CRD refuses the same resource
    again = crd.kubectl(
        "-n",
        namespace,
        "create",
        "-f",
        "-",
        input=json.dumps({**bad, "metadata": {"name": "stale2"}}),
        check=False,
    )
    assert "traffic.abTest.weights must name versions" in again.stderr

    good = sample_manifest(sample_spec, name="fresh", base_url=model_url, traffic={"strategy": "static"})
    crd.apply(good, "-n", namespace)
    with start_operator(
        crd, namespace, kubeconfig=operator_kubeconfig(crd, namespace, tmp_path), identity="op-a"
    ) as op:
        md = wait_for(
            lambda: condition_is(crd, namespace, "stale", "Degraded", "True", "InvalidSpec"),
            timeout=60,
            what="Degraded/InvalidSpec",
        )
        message = {c["type"]: c for c in md["status"]["conditions"]}["Degraded"]["message"]
        assert "traffic.abTest.weights: unknown version 'v9'" in message
        assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
        wait_for(
            lambda: condition_is(crd, namespace, "fresh", "Ready", "True"),
            timeout=90,
            what="the valid resource next to it to be served",
        )
        assert [e["reason"] for e in events(crd, namespace, "stale")] == ["InvalidSpec"]
        assert op.alive() and op.health()["leader"] is True
        assert not [d for d in deployments(crd, namespace) if d.startswith("stale")]


def _strip_rules(schema: dict[str, Any]) -> None:
    schema.pop("x-kubernetes-validations", None)
    for sub in (schema.get("properties") or {}).values():
        _strip_rules(sub)
    if isinstance(schema.get("items"), dict):
        _strip_rules(schema["items"])


def test_status_write_conflict_is_retried_with_fresh_data(
    crd: ControlPlane, namespace: str, sample_spec: Path, model_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer slips in between the controller's (cached) read and its status write: the write, conditional
    on the cached resourceVersion, is refused (409); the controller reads the resource fresh, decides again
    and writes a status consistent with the latest object."""
    from ferryman_operator.backends.factory import all_kinds
    from ferryman_operator.cache import Cache
    from ferryman_operator.controller import Controller
    from ferryman_operator.kube.client import ApiError, KubeClient
    from ferryman_operator.preflight import Preflight
    from ferryman_operator.prometheus import PrometheusStats
    from ferryman_operator.settings import Settings

    monkeypatch.setenv("KUBECONFIG", str(crd.kubeconfig))
    doc = sample_manifest(sample_spec, name=NAME, base_url=model_url, traffic={"strategy": "static"})
    crd.apply(doc, "-n", namespace)
    edited = copy.deepcopy(doc)
    edited["spec"]["traffic"] = {"strategy": "canary", "stable": "v1", "candidate": "v2"}
    attempts: list[str] = []

    class RacingKube(KubeClient):
        async def replace_status(self, obj: Mapping[str, Any]) -> dict[str, Any]:
            if not attempts:  # someone edits the spec after our read, before our write
                crd.kubectl(
                    "-n",
                    namespace,
                    "apply",
                    "--server-side",
                    "--field-manager=ferryman-tests",
                    "-f",
                    "-",
                    input=yaml.safe_dump(edited),
                )
            try:
                result = await super().replace_status(obj)
            except ApiError as err:
                attempts.append("conflict" if err.conflict else f"error {err.status}")
                raise
            attempts.append("ok")
            return result

    async def run() -> None:
        kube = RacingKube()
        cache = Cache(
            kube, namespaces=[namespace], kinds=all_kinds(), on_md=lambda *_: None, on_owned=lambda *_: None
        )
        cache.start()
        await (
            cache.wait_synced()
        )  # the controller reads the resource from its watch cache (stale after the edit)
        controller = Controller(
            kube=kube,
            cache=cache,
            settings=Settings(identity="in-test"),
            prometheus=PrometheusStats(""),
            preflight=Preflight(enabled=False),
        )
        try:
            await controller.reconcile((namespace, NAME))
        finally:
            await cache.stop()
            await kube.close()

    asyncio.run(run())
    assert attempts == ["conflict", "ok"]
    md = get_md(crd, namespace, NAME)
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"] == 2
    assert md["status"]["weights"] == {"v1": 95, "v2": 5}  # decided on the edited spec, not the stale one
    assert md["status"]["rollout"]["strategy"] == "canary"
