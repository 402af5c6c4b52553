"""The test control plane itself: version, upstream CRDs and their schemas, scheduling onto KWOK
fake nodes (from namespaces placed there; the real node has tests/cluster/test_real_node.py), Pod
Security admission, ServiceAccount tokens and RBAC."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .controlplane import ControlPlane

pytestmark = pytest.mark.cluster

UPSTREAM_CRDS = [
    "inferenceservices.serving.kserve.io",
    "servingruntimes.serving.kserve.io",
    "clusterservingruntimes.serving.kserve.io",
    "rayservices.ray.io",
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
    "httproutes.gateway.networking.k8s.io",
]


def test_upstream_crds_are_the_ones_crds_sh_fetches() -> None:
    """up.sh installs the directory scripts/cluster/crds.sh fills (from the projects' Go modules)."""
    from tests.helpers import upstream_crds

    fetched = sorted(upstream_crds.crd(f)["metadata"]["name"] for f in upstream_crds.FILES)
    assert fetched == sorted(UPSTREAM_CRDS)


RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}


def test_apiserver_reports_built_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("get", "--raw=/version").stdout)
    assert version["gitVersion"] == control_plane.version
    assert version["gitVersion"].startswith("v1.")
    assert version["major"] == "1"
    assert version["minor"] == control_plane.version.split(".")[1]
    assert control_plane.kubectl("get", "--raw=/readyz").stdout.strip() == "ok"


def test_cached_tools_run(control_plane: ControlPlane) -> None:
    kubectl = control_plane.kubectl("version", "--client", "-o", "json")
    assert json.loads(kubectl.stdout)["clientVersion"]["gitVersion"].startswith("v1.")
    helm = subprocess.run(
        [str(control_plane.bin("helm")), "version", "--short"],
        capture_output=True,
        text=True,
        check=True,
        env=control_plane.env(),
    )
    assert helm.stdout.startswith("v"), helm.stdout


def test_fake_nodes_ready(control_plane: ControlPlane) -> None:
    nodes = control_plane.get_json("nodes", "-l", "type=kwok")["items"]
    assert len(nodes) >= 1
    tainted = control_plane.info.get("REAL_NODE") == "1"
    for node in nodes:
        assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
        assert _conditions(node).get("Ready") == "True", node["metadata"]["name"]
        taints = [(t["key"], t.get("value"), t["effect"]) for t in node["spec"].get("taints", [])]
        # With a real node, only pods of namespaces that ask for KWOK (they tolerate this) land here.
        assert (("kwok.x-k8s.io/node", "fake", "NoSchedule") in taints) == tainted


@pytest.mark.parametrize("crd", UPSTREAM_CRDS)
def test_upstream_crd_established(control_plane: ControlPlane, crd: str) -> None:
    obj = control_plane.get_json("customresourcedefinition", crd)
    conditions = _conditions(obj)
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"


def _inference_service(name: str, min_replicas: object) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://models/resnet"},
            }
        },
    }


def test_valid_inferenceservice_accepted(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.kubectl(
        "-n",
        namespace,
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(_inference_service("ok", 1)),
    )
    assert json.loads(out.stdout)["spec"]["predictor"]["minReplicas"] == 1


def test_invalid_inferenceservice_rejected_by_schema(control_plane: ControlPlane, namespace: str) -> None:
    proc = control_plane.kubectl(
        "-n", namespace, "create", "-f", "-", input=json.dumps(_inference_service("bad", "two")), check=False
    )
    assert proc.returncode != 0
    assert "spec.predictor.minReplicas" in proc.stderr
    assert "integer" in proc.stderr
    assert (
        control_plane.kubectl("-n", namespace, "get", "inferenceservice", "bad", check=False).returncode != 0
    )


def test_unknown_field_rejected_by_strict_validation(control_plane: ControlPlane, namespace: str) -> None:
    isvc = _inference_service("typo", 1)
    isvc["spec"]["predictor"]["minReplica"] = 1
    proc = control_plane.kubectl(
        "-n", namespace, "create", "--validate=strict", "-f", "-", input=json.dumps(isvc), check=False
    )
    assert proc.returncode != 0
    assert "minReplica" in proc.stderr


def _deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.invalid/ferryman/runtime:test",
                            "ports": [{"containerPort": 8080}],
                            "securityContext": RESTRICTED_CONTAINER_SECURITY,
                        }
                    ],
                },
            },
        },
    }


def test_deployment_gets_ready_pods_on_fake_nodes(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.apply(_deployment("web", 2), "-n", namespace)
    control_plane.kubectl(
        "-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150
    )

    deploy = control_plane.get_json("-n", namespace, "deployment", "web")
    assert deploy["status"]["readyReplicas"] == 2
    assert deploy["status"]["availableReplicas"] == 2

    pods = control_plane.get_json("-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert _conditions(pod).get("Ready") == "True"
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["status"].get("podIP")
        # The ServiceAccount admission plugin mounted a projected token.
        volumes = [v["name"] for v in pod["spec"].get("volumes", [])]
        assert any(v.startswith("kube-api-access-") for v in volumes)


def test_restricted_violation_rejected(control_plane: ControlPlane, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/ferryman/runtime:test",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    proc = control_plane.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "privileged" in proc.stderr


def test_deployment_violating_restricted_gets_no_pods(control_plane: ControlPlane, namespace: str) -> None:
    deploy = _deployment("root", 1)
    pod_spec = deploy["spec"]["template"]["spec"]
    pod_spec["securityContext"] = {}
    pod_spec["containers"][0]["securityContext"] = {}
    # The Deployment itself is admitted (with a warning); its ReplicaSet cannot create pods.
    control_plane.apply(deploy, "-n", namespace)
    deadline = time.monotonic() + 60
    while True:
        rs = control_plane.get_json("-n", namespace, "replicasets", "-l", "app=root")["items"]
        failures = [
            c for r in rs for c in r.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"
        ]
        if failures:
            break
        assert time.monotonic() < deadline, "no ReplicaFailure condition on the ReplicaSet after 60s"
        time.sleep(0.5)
    assert "violates PodSecurity" in failures[0]["message"]
    assert control_plane.get_json("-n", namespace, "pods", "-l", "app=root")["items"] == []


def test_serviceaccount_token_and_rbac(control_plane: ControlPlane, namespace: str) -> None:
    token = control_plane.kubectl(
        "-n", namespace, "create", "token", "default", "--duration=10m"
    ).stdout.strip()
    assert token.count(".") == 2  # a JWT signed with the service-account key
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    out = control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    status = json.loads(out.stdout)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:default"

    user = f"system:serviceaccount:{namespace}:default"
    denied = control_plane.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, "--as", user, check=False
    )
    assert denied.stdout.strip() == "no"
    control_plane.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:default",
    )
    allowed = control_plane.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, "--as", user, check=False
    )
    assert allowed.stdout.strip() == "yes"
