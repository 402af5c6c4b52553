"""The test cluster's real node (scripts/cluster/node-up.sh): a kubelet with containerd, runc, the CNI
bridge, kube-proxy and CoreDNS, registered under its own node identity.

Checks what a user of the cluster relies on: the node is Ready under ``system:node:<name>``; a pod
from a locally imported image runs and answers HTTP from the host on its pod IP and through a
ClusterIP Service; inside the pod Service names resolve and the apiserver answers through the
``kubernetes`` Service; ``kubectl logs`` and ``kubectl exec`` reach the kubelet; pods of KWOK
namespaces stay on the KWOK nodes, pods of plain namespaces come to the real node.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.polling import wait_for

from .controlplane import ControlPlane

pytestmark = pytest.mark.cluster

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def http_get(url: str, *, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return resp.read().decode()


def probe_pod(name: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "securityContext": RESTRICTED_POD,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["serve", ":8080"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }


@dataclass
class Served:
    cp: ControlPlane
    namespace: str
    pod: dict[str, Any]
    service: dict[str, Any]

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl("-n", self.namespace, "exec", self.pod_name, "--", *argv, check=False)


def wait_pod_ready(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod: dict[str, Any] = cp.get_json("-n", namespace, "pod", name)
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        return pod if conds.get("Ready") == "True" else None

    def described() -> str:
        return cp.kubectl("-n", namespace, "describe", "pod", name, check=False).stdout[-3000:]

    pod: dict[str, Any] = wait_for(
        ready, timeout=90, what=f"pod {namespace}/{name} Ready", on_timeout=described
    )
    return pod


@pytest.fixture(scope="module")
def served(control_plane: ControlPlane) -> Iterator[Served]:
    """One probe pod (HTTP on 8080) on the real node and a ClusterIP Service (port 80) in front of it."""
    cp = control_plane
    ns = cp.create_namespace(on="real")
    try:
        # The pod is not named like the Service: its own name resolves through /etc/hosts.
        cp.apply(probe_pod("server", cp.info["PROBE_IMAGE"], {"app": "web"}), "-n", ns)
        cp.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
            "-n",
            ns,
        )
        pod = wait_pod_ready(cp, ns, "server")
        service = cp.get_json("-n", ns, "service", "web")
        yield Served(cp=cp, namespace=ns, pod=pod, service=service)
    finally:
        cp.delete_namespace(ns)


# --- the node and its identities -----------------------------------------------------------------


def test_real_node_ready_with_its_address(control_plane: ControlPlane) -> None:
    node = control_plane.get_json("node", control_plane.node_name)
    labels = node["metadata"]["labels"]
    assert labels["type"] == "real" and labels["ferryman.dev/node"] == "real"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == control_plane.node_ip
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == control_plane.version
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert not node["spec"].get("taints")


def _whoami(cp: ControlPlane, kubeconfig: Path) -> dict[str, Any]:
    out = cp.kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json").stdout
    return json.loads(out)["status"]["userInfo"]  # type: ignore[no-any-return]


def test_kubelet_and_kube_proxy_identities(control_plane: ControlPlane) -> None:
    cp = control_plane
    node_dir = cp.run_dir / "node"
    kubelet = _whoami(cp, node_dir / "kubelet.kubeconfig")
    assert kubelet["username"] == f"system:node:{cp.node_name}"
    assert "system:nodes" in kubelet["groups"]
    assert _whoami(cp, node_dir / "kube-proxy.kubeconfig")["username"] == "system:kube-proxy"
    # Node authorizer + NodeRestriction: the kubelet may not touch another node.
    denied = cp.kubectl(
        "--kubeconfig",
        str(node_dir / "kubelet.kubeconfig"),
        "label",
        "node",
        "kwok-node-0",
        "x=y",
        check=False,
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_kubelet_api_requires_authentication(control_plane: ControlPlane) -> None:
    cp = control_plane
    # The kubelet's serving certificate verifies against the cluster CA for the node IP ...
    ctx = ssl.create_default_context(cafile=str(cp.run_dir / "pki" / "ca.crt"))
    url = f"https://{cp.node_ip}:10250/pods"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, context=ctx, timeout=5)
    # ... and anonymous requests are refused.
    assert err.value.code == 401
    # The apiserver's own client certificate (system:kubelet-api-admin) gets through.
    ctx.load_cert_chain(
        cp.run_dir / "pki" / "apiserver-kubelet-client.crt",
        cp.run_dir / "pki" / "apiserver-kubelet-client.key",
    )
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        assert json.loads(resp.read())["kind"] == "PodList"


# --- a pod from a locally imported image ---------------------------------------------------------


def test_pod_answers_on_its_pod_ip(served: Served) -> None:
    pod = served.pod
    assert pod["spec"]["nodeName"] == served.cp.node_name
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith("10.245.0.")
    assert http_get(f"http://{pod_ip}:8080/") == f"probe {served.pod_name}\n"


def test_pod_answers_through_cluster_ip(served: Served) -> None:
    cluster_ip = served.service["spec"]["clusterIP"]
    assert cluster_ip.startswith("10.96.")
    # kube-proxy programs the Service shortly after the endpoints appear.
    body = wait_for(lambda: _try_get(f"http://{cluster_ip}/"), timeout=30, what=f"ClusterIP {cluster_ip}")
    assert body == f"probe {served.pod_name}\n"


def _try_get(url: str) -> str | None:
    try:
        return http_get(url, timeout=2)
    except OSError:
        return None


def test_pod_resolves_service_names(served: Served) -> None:
    ns = served.namespace
    resolved = served.exec("/probe", "resolve", "kubernetes.default.svc.cluster.local")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split() == ["10.96.0.1"]
    svc = served.exec("/probe", "resolve", f"web.{ns}.svc.cluster.local")
    assert svc.returncode == 0, svc.stderr
    assert svc.stdout.split() == [served.service["spec"]["clusterIP"]]
    # The search path of the pod's resolv.conf completes short names.
    short = served.exec("/probe", "resolve", "web")
    assert short.returncode == 0, short.stderr
    assert short.stdout.split() == [served.service["spec"]["clusterIP"]]
    # No upstream server: names outside the cluster do not resolve (nothing leaves the machine).
    assert served.exec("/probe", "resolve", "example.com.").returncode != 0


def test_pod_reaches_apiserver_through_kubernetes_service(served: Served) -> None:
    slices = served.cp.get_json(
        "-n", "default", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes"
    )
    addresses = [a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]]
    assert addresses == [served.cp.node_ip]
    who = served.exec("/probe", "whoami")
    assert who.returncode == 0, who.stderr
    assert who.stdout.strip() == f"system:serviceaccount:{served.namespace}:default"


def test_pod_to_service_to_pod(served: Served) -> None:
    # Through DNS and the ClusterIP back to the same pod (hairpin on the bridge).
    got = served.exec("/probe", "get", f"http://web.{served.namespace}.svc.cluster.local/")
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"probe {served.pod_name}\n"


def test_logs_and_exec(served: Served) -> None:
    logs = served.cp.kubectl("-n", served.namespace, "logs", served.pod_name).stdout
    assert "probe serving on :8080" in logs
    conf = served.exec("/bin/sh", "-c", "cat /etc/resolv.conf; id -u")
    assert conf.returncode == 0, conf.stderr
    assert f"nameserver {served.cp.node_ip}" in conf.stdout
    assert f"search {served.namespace}.svc.cluster.local svc.cluster.local cluster.local" in conf.stdout
    assert conf.stdout.split()[-1] == "65532"


# --- placement: KWOK namespaces on KWOK nodes, the rest on the real node --------------------------


def test_kwok_namespace_pods_land_on_kwok_nodes(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    pod = probe_pod("fake", "registry.invalid/ferryman/never-pulled:1", {"app": "fake"})
    cp.apply(pod, "-n", namespace)
    ready = wait_pod_ready(cp, namespace, "fake")
    assert ready["spec"]["nodeName"].startswith("kwok-node-")
    assert ready["spec"]["nodeSelector"] == {"type": "kwok"}
    assert any(t.get("key") == "kwok.x-k8s.io/node" for t in ready["spec"]["tolerations"])


def test_plain_namespace_pods_land_on_real_node(control_plane: ControlPlane) -> None:
    cp = control_plane
    plain = f"t-plain-{uuid.uuid4().hex[:8]}"
    cp.kubectl("create", "namespace", plain)  # no annotations: what `kubectl create namespace` makes
    try:
        wait_for(
            lambda: cp.kubectl("-n", plain, "get", "sa", "default", check=False).returncode == 0,
            timeout=60,
            what="the default ServiceAccount",
        )
        cp.apply(probe_pod("plain", cp.info["PROBE_IMAGE"], {"app": "plain"}), "-n", plain)
        pod = wait_pod_ready(cp, plain, "plain")
        assert pod["spec"]["nodeName"] == cp.node_name
    finally:
        cp.delete_namespace(plain)
