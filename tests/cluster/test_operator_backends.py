"""The ray and kserve backends on the real control plane: the RayService and InferenceServices the
operator writes, and the ``ferryman-onnx`` ClusterServingRuntime, are accepted by the upstream CRDs
(KubeRay, KServe: fetched from their Go modules by scripts/cluster/crds.sh, installed by up.sh) with
strict field validation, as the unit tests (tests/unit/test_kserve_contract.py) check offline.

KubeRay and KServe controllers do not run here, so the tests play their part the way they would: they
write the ``Ready`` condition into the objects' status, and the ModelDeployment follows. Switching the
runtime prunes the previous backend's objects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman import rollout
from ferryman.serve_config import IMPORT_PATH, INGRESS, version_deployment
from ferryman.spec import parse_deployment
from ferryman_operator.backends import kserve
from ferryman_operator.backends.base import Context
from ferryman_operator.backends.ray import RayBackend
from ferryman_operator.settings import Settings
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    condition_is,
    get_md,
    operator_kubeconfig,
    routes_of,
    sample_manifest,
    start_operator,
    wait_for,
)
from tests.helpers import helm

pytestmark = pytest.mark.cluster


def ready_condition(message: str) -> dict[str, str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": message,
        "lastTransitionTime": now,
    }


def mark_ready(cp: ControlPlane, namespace: str, kind: str, name: str, status: dict[str, Any]) -> None:
    cp.kubectl(
        "-n",
        namespace,
        "patch",
        kind,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


RUNTIME_FILE = (
    Path(__file__).resolve().parents[2]
    / "runtimes"
    / "ferryman_runtimes"
    / "kserve"
    / "clusterservingruntime.yaml"
)


def builder_context(sample_spec: Path, namespace: str, model_url: str) -> Context:
    doc = sample_manifest(sample_spec, name="bc-strict", base_url=model_url)
    doc["metadata"]["namespace"] = namespace
    md = parse_deployment(doc)
    state, _ = rollout.start(md, now=0.0)
    owner = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": md.name,
        "uid": "00000000-0000-4000-8000-000000000001",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return Context(
        md=md,
        namespace=namespace,
        owner=owner,
        state=state,
        table=rollout.table_for(md, state),
        settings=Settings(
            image="registry.example/ferryman:1.2.3", ray_image="rayproject/ray:2.60.0", identity="t"
        ),
    )


def strict_dry_run(cp: ControlPlane, namespace: str, obj: dict[str, Any]) -> Any:
    """Create ``obj`` with a server-side dry run and ``fieldValidation=Strict`` (kubectl --validate=strict):
    the schema's errors and any field it would prune are refused."""
    return cp.kubectl(
        "-n",
        namespace,
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(obj),
        check=False,
    )


def missing(stored: Any, sent: Any, path: str = "spec") -> list[str]:
    """Paths of what was sent but not stored (the apiserver may add defaults, never drop a field)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        return [
            p
            for k, v in sent.items()
            for p in (missing(stored[k], v, f"{path}.{k}") if k in stored else [f"{path}.{k}"])
        ]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(stored, sent, strict=True))
            for p in missing(a, b, f"{path}[{i}]")
        ]
    return [] if stored == sent else [path]


def test_the_builders_output_passes_strict_validation(
    control_plane: ControlPlane, namespace: str, sample_spec: Path, model_url: str
) -> None:
    ctx = builder_context(sample_spec, namespace, model_url)
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    chart_runtime = helm.one(
        helm.render([helm.CHART / "ci" / "kserve-on-values.yaml"]), "ClusterServingRuntime"
    )
    objects = [
        *(o for o in kserve.KServeBackend().desired(ctx) if o["kind"] == "InferenceService"),
        *RayBackend().desired(ctx),
        runtime,
        chart_runtime,
    ]
    assert [o["kind"] for o in objects] == [
        "InferenceService",
        "InferenceService",
        "RayService",
        "ClusterServingRuntime",
        "ClusterServingRuntime",
    ]
    for obj in objects:
        proc = strict_dry_run(control_plane, namespace, obj)
        assert proc.returncode == 0, f"{obj['kind']} {obj['metadata']['name']}: {proc.stderr}"
        assert "unknown field" not in proc.stderr, proc.stderr
        pruned = missing(json.loads(proc.stdout)["spec"], obj["spec"])
        assert not pruned, f"{obj['kind']}: the apiserver dropped {pruned}"


def test_an_unknown_field_in_the_builders_output_is_refused(
    control_plane: ControlPlane, namespace: str, sample_spec: Path, model_url: str
) -> None:
    isvc = kserve.inference_service(builder_context(sample_spec, namespace, model_url), "v1")
    isvc = json.loads(json.dumps(isvc))  # a copy: the builder shares its security-context dicts
    isvc["spec"]["predictor"]["model"]["resources"]["limit"] = {"cpu": "1"}
    proc = strict_dry_run(control_plane, namespace, isvc)
    assert proc.returncode != 0
    assert 'unknown field "spec.predictor.model.resources.limit"' in proc.stderr, proc.stderr


def test_ray_backend_writes_a_valid_rayservice(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    name = "bc-ray"
    with start_operator(
        crd, namespace, kubeconfig=operator_kubeconfig(crd, namespace, tmp_path), identity="op-a"
    ):
        doc = sample_manifest(
            sample_spec,
            name=name,
            base_url=model_url,
            runtime="ray",
            traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 70, "v2": 30}}},
        )
        crd.apply(doc, "-n", namespace)
        # the first status comes before the objects ("not found"), the next one once the RayService is written
        md = wait_for(
            lambda: (
                (m := condition_is(crd, namespace, name, "Ready", "False", "NotReady"))
                and "RayService Ready=Unknown"
                in {c["type"]: c for c in m["status"]["conditions"]}["Ready"]["message"]
                and m
            ),
            timeout=60,
            what="RayService written, not ready yet",
        )
        rs = crd.get_json("-n", namespace, "rayservice", name)  # stored: the upstream schema accepted it
        assert rs["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        assert rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] == 2
        cluster = rs["spec"]["rayClusterConfig"]
        for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
            env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
            assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        services = {s["metadata"]["name"] for s in crd.get_json("-n", namespace, "services")["items"]}
        assert not services  # KubeRay makes <name>-serve-svc; HAProxy on its port reaches direct ingress
        config = yaml.safe_load(rs["spec"]["serveConfigV2"])
        (app,) = config["applications"]
        assert app["import_path"] == IMPORT_PATH
        assert app["args"]["deployment"]["metadata"]["name"] == name
        deployments = {d["name"]: d for d in app["deployments"]}
        assert set(deployments) == {INGRESS, version_deployment("v1"), version_deployment("v2")}
        assert deployments[INGRESS]["user_config"] == {
            "strategy": "abTest",
            "phase": "Running",
            "stable": "v1",
            "candidate": None,
            "weights": {"v1": 70, "v2": 30},
        }

        mark_ready(
            crd,
            namespace,
            "rayservice",
            name,
            {"conditions": [ready_condition("serve applications running")], "serviceStatus": "Running"},
        )
        md = wait_for(lambda: condition_is(crd, namespace, name, "Ready", "True"), timeout=60, what="Ready")
        assert md["status"]["phase"] == "Running"  # an A/B test runs until stopped
        assert md["status"]["endpoint"] == f"http://{name}-serve-svc.{namespace}.svc.cluster.local:8000"
        assert md["status"]["trafficSplit"] == "v1 70%, v2 30%"


def test_kserve_backend_inferenceservices_then_runtime_switch(
    crd: ControlPlane, namespace: str, tmp_path: Path, sample_spec: Path, model_url: str
) -> None:
    name = "bc-kserve"
    with start_operator(
        crd, namespace, kubeconfig=operator_kubeconfig(crd, namespace, tmp_path), identity="op-a"
    ):
        doc = sample_manifest(
            sample_spec,
            name=name,
            base_url=model_url,
            runtime="kserve",
            traffic={"strategy": "shadow", "stable": "v1", "candidate": "v2"},
        )
        crd.apply(doc, "-n", namespace)
        md = wait_for(
            lambda: condition_is(crd, namespace, name, "Ready", "False", "NotReady"),
            timeout=60,
            what="InferenceServices written, not ready yet",
        )
        for v in ("v1", "v2"):
            isvc = crd.get_json("-n", namespace, "inferenceservice", f"{name}-{v}")
            model = isvc["spec"]["predictor"]["model"]
            assert model["runtime"] == "ferryman-onnx" and model["modelFormat"] == {"name": "onnx"}
            assert model["storageUri"] == f"{model_url}/models/{v}/model.onnx"
            # appended to the runtime's --model_name={{.Name}}: served under the ModelDeployment's name
            assert model["args"] == [f"--model_name={name}", f"--model_version={v}"]
            assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
            assert isvc["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        routes = routes_of(crd, namespace, name)
        assert routes["shadow"] == {"version": "v2", "percent": 100.0}
        assert routes["backends"]["v2"] == f"http://{name}-v2-predictor.{namespace}.svc.cluster.local"

        for v in ("v1", "v2"):
            mark_ready(
                crd,
                namespace,
                "inferenceservice",
                f"{name}-{v}",
                {"conditions": [ready_condition("predictor ready")]},
            )
        md = wait_for(lambda: condition_is(crd, namespace, name, "Ready", "True"), timeout=60, what="Ready")
        assert md["status"]["trafficSplit"] == "v1 100%"  # the shadow gets copies, callers only v1

        # switch the runtime: the native objects appear, the InferenceServices are pruned
        doc["spec"]["runtime"] = "native"
        crd.apply(doc, "-n", namespace)
        wait_for(
            lambda: not crd.get_json("-n", namespace, "inferenceservices")["items"],
            timeout=60,
            what="InferenceServices pruned",
        )
        wait_for(
            lambda: condition_is(crd, namespace, name, "Ready", "True"), timeout=60, what="Ready on native"
        )
        names = {d["metadata"]["name"] for d in crd.get_json("-n", namespace, "deployments")["items"]}
        assert names == {f"{name}-v1", f"{name}-v2", f"{name}-gateway"}

        # a URI KServe's storage initializer cannot fetch is refused with the reason, nothing is touched
        bad = sample_manifest(sample_spec, name="bc-file", base_url=model_url, runtime="kserve")
        bad["spec"]["versions"][0]["uri"] = "file:///models/v1/model.onnx"
        crd.apply(bad, "-n", namespace)
        md = wait_for(
            lambda: condition_is(crd, namespace, "bc-file", "Degraded", "True", "UnsupportedSpec"),
            timeout=60,
            what="Degraded/UnsupportedSpec",
        )
        message = {c["type"]: c for c in md["status"]["conditions"]}["Degraded"]["message"]
        assert "version v1: uri 'file:///models/v1/model.onnx' cannot be a KServe storageUri" in message
        assert (
            crd.kubectl("-n", namespace, "get", "inferenceservice", "bc-file-v2", check=False).returncode != 0
        )
        assert get_md(crd, namespace, "bc-file")["status"]["phase"] == "Degraded"
