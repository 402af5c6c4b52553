"""The Helm chart with the real helm binary in the real control plane (upstream CRDs installed, so
ServiceMonitor, PrometheusRule and ClusterServingRuntime meet their real schemas).

One release per module, in a namespace enforcing the Pod Security "restricted" level, walked through its
life: install (every object accepted, operator pod Ready on a KWOK node), least privilege (`kubectl auth
can-i` as its ServiceAccount), the example ModelDeployment reconciled by the operator running with that
ServiceAccount's own token and the chart's settings, `helm upgrade` with changed values, `helm uninstall`
(no object of any kind left carrying the release's labels), and the documented CRD upgrade procedure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster.controlplane import REPO_ROOT, ControlPlane, namespace_manifest
from tests.helpers.polling import wait_for
from tests.helpers.ports import free_port

pytestmark = pytest.mark.cluster

CHART = REPO_ROOT / "charts" / "ferryman"
EXAMPLE = CHART / "examples" / "modeldeployment.yaml"
CRD_NAME = "modeldeployments.serving.ferryman.dev"
# Unique per run: cluster-scoped objects (the ClusterRole) must not collide with other tests' or releases'.
RELEASE = f"ferryman-{uuid.uuid4().hex[:6]}"
INSTALL_VALUES: dict[str, Any] = {
    "kserve": {"enabled": True},
    "monitoring": {
        "release": "kube-prometheus-stack",
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
    "operator": {"preflight": {"enabled": False}, "resyncSeconds": 1},  # the example's URIs are placeholders
    "loadtest": {"enabled": True, "workers": {"replicas": 2}, "duration": "30s"},
}
UPGRADE_VALUES: dict[str, Any] = {
    "kserve": {"enabled": False},
    "monitoring": {"release": "prom", "podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "operator": {"replicas": 2, "preflight": {"enabled": False}, "resyncSeconds": 1},
}


@dataclass
class Release:
    cp: ControlPlane
    name: str
    namespace: str  # the release's
    models: str  # where the example ModelDeployment goes
    workdir: Path

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/managed-by=Helm"

    @property
    def service_account(self) -> str:
        return f"{self.name}-operator"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def helm(self, *args: str, check: bool = True, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        env = self.cp.env()
        env.update(
            HELM_CACHE_HOME=str(self.workdir / "helm-cache"),
            HELM_CONFIG_HOME=str(self.workdir / "helm-config"),
            HELM_DATA_HOME=str(self.workdir / "helm-data"),
        )
        proc = subprocess.run(
            [str(self.cp.bin("helm")), *args, "--kubeconfig", str(self.cp.kubeconfig)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def values_file(self, values: dict[str, Any], name: str) -> str:
        path = self.workdir / f"{name}-values.yaml"
        path.write_text(json.dumps(values))
        return str(path)

    def manifest(self) -> list[dict[str, Any]]:
        out = self.helm("get", "manifest", self.name, "-n", self.namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def can_i(self, verb: str, resource: str, namespace: str | None = None, name: str | None = None) -> bool:
        """``kubectl auth can-i`` as the operator's ServiceAccount; ``resource`` may end in
        ``/subresource``."""
        resource, _, sub = resource.partition("/")
        args = ["auth", "can-i", verb, resource if name is None else f"{resource}/{name}", "--as", self.user]
        args += [f"--subresource={sub}"] if sub else []
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        out = self.cp.kubectl(*args, check=False).stdout.strip()
        assert out in ("yes", "no"), out
        return out == "yes"


def _namespace(cp: ControlPlane, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cp.apply(namespace_manifest(name, on="kwok"))  # restricted; pods on the KWOK nodes
    wait_for(
        lambda: cp.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0,
        timeout=60,
        what=f"the default ServiceAccount of {name}",
    )
    return name


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane) -> Iterator[Release]:
    cp = control_plane
    with tempfile.TemporaryDirectory(prefix="ferryman-chart-") as tmp:
        rel = Release(
            cp=cp,
            name=RELEASE,
            namespace=_namespace(cp, "chart"),
            models=_namespace(cp, "models"),
            workdir=Path(tmp),
        )
        try:
            yield rel
        finally:
            rel.helm("uninstall", rel.name, "-n", rel.namespace, "--ignore-not-found", check=False)
            for ns in (rel.namespace, rel.models):
                cp.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def _labelled(rel: Release) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every object of every listable kind carrying the release's labels."""
    kinds = rel.cp.kubectl("api-resources", "--verbs=list,delete", "-o", "name").stdout.split()
    out = rel.cp.kubectl("get", ",".join(kinds), "--all-namespaces", "-l", rel.selector, "-o", "json").stdout
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in json.loads(out)["items"]
    }


def _keys(objs: list[dict[str, Any]], default_ns: str) -> set[tuple[str, str, str]]:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterServingRuntime"}
    return {
        (
            o["kind"],
            "" if o["kind"] in cluster_scoped else o["metadata"].get("namespace", default_ns),
            o["metadata"]["name"],
        )
        for o in objs
    }


def _no_orphans(rel: Release, expected: set[tuple[str, str, str]]) -> None:
    """Exactly ``expected`` carries the release's labels, apart from what controllers made from it (pods and
    replica sets of its Deployments, which are garbage-collected with them)."""
    diff: set[tuple[str, str, str]] = set()

    def settled() -> bool:
        nonlocal diff
        diff = {k for k in _labelled(rel) if k[0] not in ("Pod", "ReplicaSet")} ^ expected
        return not diff

    try:
        wait_for(settled, timeout=60, interval=1, what="exactly the release's objects to carry its labels")
    except AssertionError as err:
        raise AssertionError(f"{err}; orphaned or missing: {sorted(diff)}") from err


# -- install -------------------------------------------------------------------------------------------
def test_install_every_object_accepted(release: Release) -> None:
    rel = release
    rel.helm(
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "-f",
        rel.values_file(INSTALL_VALUES, "install"),
        "--wait",
        "--timeout",
        "120s",
    )
    manifest = rel.manifest()
    kinds = {o["kind"] for o in manifest}
    assert {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Lease",
        "ServiceMonitor",
        "PrometheusRule",
        "ClusterServingRuntime",
        "ConfigMap",
        "Job",
        "Service",
    } <= kinds
    # Every rendered object exists as rendered (the apiserver and the upstream CRD schemas accepted it).
    live = json.loads(
        rel.cp.kubectl(
            "get",
            "-f",
            "-",
            "-o",
            "json",
            input=yaml.safe_dump_all(
                [
                    {
                        **o,
                        "metadata": {
                            **o["metadata"],
                            "namespace": o["metadata"].get("namespace", rel.namespace),
                        },
                    }
                    for o in manifest
                ]
            ),
        ).stdout
    )
    assert _keys(live["items"], rel.namespace) == _keys(manifest, rel.namespace)
    by_key = {(o["kind"], o["metadata"]["name"]): o for o in live["items"]}
    sm = by_key[("ServiceMonitor", f"{rel.name}-workloads")]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    csr = by_key[("ClusterServingRuntime", "ferryman-onnx")]
    assert csr["spec"]["supportedModelFormats"][0]["name"] == "onnx"
    # The load test's pods were admitted under "restricted" (KWOK runs them: master and both workers).
    jobs = [o for o in live["items"] if o["kind"] == "Job"]
    assert sorted(
        j["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs
    ) == ["loadtest-master", "loadtest-worker"]
    wait_for(
        lambda: (
            len(
                rel.cp.get_json(
                    "-n",
                    rel.namespace,
                    "pods",
                    "-l",
                    f"app.kubernetes.io/instance={rel.name},ferryman.dev/loadtest-run=r1",
                )["items"]
            )
            == 3
        ),
        timeout=60,
        what="the load test's three pods",
    )
    # crds/ was installed with the release.
    crd = rel.cp.get_json("customresourcedefinition", CRD_NAME)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"


def test_operator_pod_ready_under_restricted_pod_security(release: Release) -> None:
    rel = release
    deploy = rel.cp.get_json("-n", rel.namespace, "deployment", f"{rel.name}-operator")
    assert deploy["status"].get("readyReplicas") == 1
    pods = rel.cp.get_json(
        "-n",
        rel.namespace,
        "pods",
        "-l",
        "app.kubernetes.io/component=operator,app.kubernetes.io/instance=" + rel.name,
    )["items"]
    assert len(pods) == 1
    pod = pods[0]
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True" and pod["spec"]["nodeName"].startswith("kwok-node-")
    assert pod["spec"]["serviceAccountName"] == rel.service_account
    # The namespace enforces "restricted": the pod was admitted, so it complies.
    ns = rel.cp.get_json("namespace", rel.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    container = pod["spec"]["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["runAsNonRoot"] is True


# -- least privilege ---------------------------------------------------------------------------------------
MUST = [
    ("watch", "modeldeployments.serving.ferryman.dev", None),
    ("list", "modeldeployments.serving.ferryman.dev", None),
    ("patch", "modeldeployments.serving.ferryman.dev", "MODELS"),
    ("update", "modeldeployments.serving.ferryman.dev/status", "MODELS"),
    ("create", "deployments.apps", "MODELS"),
    ("patch", "deployments.apps", "MODELS"),
    ("delete", "deployments.apps", "MODELS"),
    ("patch", "services", "MODELS"),
    ("patch", "configmaps", "MODELS"),
    ("create", "events", "MODELS"),
    ("create", "inferenceservices.serving.kserve.io", "MODELS"),
    ("patch", "rayservices.ray.io", "MODELS"),
    ("create", "leases.coordination.k8s.io", "RELEASE"),
]
MUST_NOT = [
    ("get", "secrets", "MODELS"),
    ("list", "secrets", None),
    ("get", "secrets", "RELEASE"),
    ("create", "pods", "MODELS"),
    ("create", "pods/exec", "MODELS"),
    ("update", "deployments.apps/scale", "MODELS"),
    ("list", "pods", None),
    ("delete", "namespaces", None),
    ("create", "namespaces", None),
    ("create", "serviceaccounts/token", "RELEASE"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", "MODELS"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
    ("impersonate", "serviceaccounts", "MODELS"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "modeldeployments.serving.ferryman.dev", "MODELS"),
    ("update", "deployments.apps", "MODELS"),
    ("delete", "clusterservingruntimes.serving.kserve.io", None),
    ("list", "leases.coordination.k8s.io", "RELEASE"),
    ("create", "leases.coordination.k8s.io", "MODELS"),
    ("deletecollection", "configmaps", "MODELS"),
]


def _ns(rel: Release, which: str | None) -> str | None:
    return {"MODELS": rel.models, "RELEASE": rel.namespace, None: None}[which]


def test_rbac_least_privilege(release: Release) -> None:
    rel = release
    missing = [m for m in MUST if not rel.can_i(m[0], m[1], _ns(rel, m[2]))]
    excess = [m for m in MUST_NOT if rel.can_i(m[0], m[1], _ns(rel, m[2]))]
    assert missing == [] and excess == [], f"missing: {missing}; must not have: {excess}"
    lease = f"{rel.name}-operator"
    assert rel.can_i("update", "leases.coordination.k8s.io", rel.namespace, name=lease)
    assert rel.can_i("get", "leases.coordination.k8s.io", rel.namespace, name=lease)
    assert not rel.can_i("update", "leases.coordination.k8s.io", rel.namespace, name="kube-scheduler")


# -- the operator with the chart's identity and settings -----------------------------------------------------
def _sa_kubeconfig(rel: Release) -> Path:
    token = rel.cp.kubectl(
        "-n", rel.namespace, "create", "token", rel.service_account, "--duration=30m"
    ).stdout.strip()
    admin = yaml.safe_load(rel.cp.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }
    path = rel.workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _chart_env(rel: Release, *, health: str, identity: str) -> dict[str, str]:
    """The operator container's environment as the chart sets it (downward-API values filled in)."""
    deploy = next(o for o in rel.manifest() if o["kind"] == "Deployment")
    env: dict[str, str] = {}
    for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}:
            env[e["name"]] = identity
        else:
            raise AssertionError(f"unexpected env source {e}")
    assert env["FERRYMAN_HEALTH_ADDRESS"] == "0.0.0.0:8081"
    env["FERRYMAN_HEALTH_ADDRESS"] = health  # a free loopback port instead of the pod's
    return env


@pytest.fixture
def operator(release: Release) -> Iterator[tuple[str, str]]:
    """``python -m ferryman_operator`` with the ServiceAccount's token and the chart's env; (identity, health
    URL)."""
    rel = release
    port = free_port()
    identity = f"{rel.name}-operator-local-{uuid.uuid4().hex[:5]}"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(_chart_env(rel, health=f"127.0.0.1:{port}", identity=identity))
    log = rel.workdir / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferryman_operator", "--kubeconfig", str(_sa_kubeconfig(rel))],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/healthz"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-4000:]}"
            return httpx.get(url, timeout=2).status_code == 200

        wait_for(healthy, timeout=60, what="the operator's /healthz (the chart's probe path)")
        yield identity, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if os.environ.get("FERRYMAN_KEEP_OPERATOR_LOGS"):
            print(log.read_text())


def test_example_modeldeployment_reconciles(release: Release, operator: tuple[str, str]) -> None:
    rel = release
    identity, _ = operator
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    rel.cp.kubectl("apply", "-n", rel.models, "-f", str(EXAMPLE))

    def progressing() -> dict[str, Any] | None:
        md = rel.cp.get_json("-n", rel.models, "modeldeployment", name)
        status = md.get("status") or {}
        if status.get("observedGeneration") == md["metadata"]["generation"] and status.get("trafficSplit"):
            return md
        return None

    md = wait_for(progressing, timeout=90, what="the operator to reconcile the example")
    status = md["status"]
    # A canary from v1 to v2: the first step of its steps, no analysis data yet (no Prometheus) so it holds.
    assert status["stable"] == "v1" and status["candidate"] == "v2"
    assert status["weights"] == {"v1": 95, "v2": 5}, status
    # What the native backend creates, owned by the ModelDeployment, with Ready (KWOK) pods.
    for deploy in (f"{name}-gateway", f"{name}-v1", f"{name}-v2"):
        rel.cp.kubectl(
            "-n", rel.models, "rollout", "status", f"deployment/{deploy}", "--timeout=90s", timeout=100
        )
        obj = rel.cp.get_json("-n", rel.models, "deployment", deploy)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        assert (
            obj["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/ferryman-dev/ferryman:0.1.0"
        )
    services = {s["metadata"]["name"] for s in rel.cp.get_json("-n", rel.models, "services")["items"]}
    assert {name, f"{name}-v1", f"{name}-v2"} <= services  # the model's endpoint is the Service `name`
    lease = rel.cp.get_json("-n", rel.namespace, "lease", f"{rel.name}-operator")
    assert lease["spec"]["holderIdentity"] == identity  # the chart's Lease, held by the operator
    assert lease["metadata"]["labels"]["app.kubernetes.io/instance"] == rel.name
    events = rel.cp.get_json(
        "-n",
        rel.models,
        "events",
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )["items"]
    assert events, "the operator explains its decisions in Events"

    # Deleting the resource removes everything the operator made (owner references).
    rel.cp.kubectl("delete", "-n", rel.models, "modeldeployment", name, "--wait=true", timeout=60)
    wait_for(
        lambda: (
            not rel.cp.get_json(
                "-n",
                rel.models,
                "deployments,services,configmaps",
                "-l",
                f"serving.ferryman.dev/deployment={name}",
            )["items"]
        ),
        timeout=60,
        interval=1,
        what="garbage collection of the example's objects",
    )


# -- upgrade and uninstall -----------------------------------------------------------------------------------
def test_upgrade_with_changed_values_leaves_no_orphans(release: Release) -> None:
    rel = release
    before = {o["kind"] for o in rel.manifest()}
    assert {"ServiceMonitor", "ClusterServingRuntime"} <= before
    lease_name = f"{rel.name}-operator"
    lease_before = rel.cp.get_json("-n", rel.namespace, "lease", lease_name)["spec"]
    assert lease_before.get("leaseTransitions", 0) >= 1  # the operator held it (test above)
    rel.helm(
        "upgrade",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "-f",
        rel.values_file(UPGRADE_VALUES, "upgrade"),
        "--wait",
        "--timeout",
        "120s",
    )
    manifest = rel.manifest()
    kinds = {o["kind"] for o in manifest}
    assert "ServiceMonitor" not in kinds and "ClusterServingRuntime" not in kinds
    assert {"PodMonitor", "PodDisruptionBudget"} <= kinds
    deploy = rel.cp.get_json("-n", rel.namespace, "deployment", f"{rel.name}-operator")
    assert deploy["spec"]["replicas"] == 2 and deploy["status"].get("readyReplicas") == 2
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRYMAN_LEADER_ELECTION"] == "true"
    pm = rel.cp.get_json("-n", rel.namespace, "podmonitor", f"{rel.name}-workloads")
    assert pm["metadata"]["labels"]["release"] == "prom"
    assert rel.cp.kubectl("get", "clusterservingruntime", "ferryman-onnx", check=False).returncode != 0
    assert not rel.can_i("create", "inferenceservices.serving.kserve.io", rel.models)  # kserve off: revoked
    # The chart owns the Lease object, never its spec: the upgrade left the election record alone.
    assert rel.cp.get_json("-n", rel.namespace, "lease", lease_name)["spec"] == lease_before
    _no_orphans(rel, _keys(manifest, rel.namespace))


def test_uninstall_leaves_nothing(release: Release) -> None:
    rel = release
    assert _labelled(rel), "nothing labelled before the uninstall: the check below would prove nothing"
    rel.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout", "120s")
    _no_orphans(rel, set())
    secrets = rel.cp.get_json("-n", rel.namespace, "secrets", "-l", f"owner=helm,name={rel.name}")["items"]
    assert secrets == []  # Helm's release records
    # Helm never deletes crds/: ModelDeployments elsewhere survive an uninstall.
    assert rel.cp.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0


# -- the CRD upgrade procedure of docs/helm.md ---------------------------------------------------------------
def _documented_crd_upgrade() -> list[str]:
    text = (REPO_ROOT / "docs" / "helm.md").read_text()
    lines = re.findall(
        r"^kubectl apply --server-side --force-conflicts -f charts/ferryman/crds/\s*$", text, re.M
    )
    assert lines, "docs/helm.md no longer documents the CRD upgrade command"
    return lines[0].split()


def _older_crd() -> dict[str, Any]:
    """The chart's CRD as an older release would have had it: no `threads` field, no Runtime column."""
    crd = yaml.safe_load((CHART / "crds" / "modeldeployments.yaml").read_text())
    version = crd["spec"]["versions"][0]
    spec_props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "threads" in spec_props
    del spec_props["threads"]
    version["additionalPrinterColumns"] = [
        c for c in version["additionalPrinterColumns"] if c["name"] != "Runtime"
    ]
    return crd


def _live_version(cp: ControlPlane) -> dict[str, Any]:
    crd = cp.get_json("customresourcedefinition", CRD_NAME)
    version: dict[str, Any] = crd["spec"]["versions"][0]
    return version


def test_crd_upgrade_procedure(control_plane: ControlPlane, release: Release) -> None:
    cp = control_plane
    example = yaml.safe_load(EXAMPLE.read_text())
    example["metadata"]["name"] = "crd-upgrade"
    example["spec"]["threads"] = 2
    try:
        # An older chart's CRD is in the cluster (replace: exactly that object, as an install would leave it).
        cp.kubectl("replace", "-f", "-", input=json.dumps(_older_crd()))
        assert (
            "threads"
            not in _live_version(cp)["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        )
        old = cp.kubectl(
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            release.models,
            "-f",
            "-",
            input=json.dumps(example),
            check=False,
        )
        assert old.returncode != 0 and "threads" in old.stderr, old.stderr

        # The documented command, verbatim, from the repository root.
        cmd = _documented_crd_upgrade()
        assert cmd[0] == "kubectl"
        proc = subprocess.run(
            [str(cp.bin("kubectl")), "--kubeconfig", str(cp.kubeconfig), *cmd[1:]],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} serverside-applied" in proc.stdout
        cp.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")

        live = _live_version(cp)
        assert "threads" in live["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        assert "Runtime" in {c["name"] for c in live["additionalPrinterColumns"]}
        new = cp.kubectl(
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            release.models,
            "-f",
            "-",
            "-o",
            "json",
            input=json.dumps(example),
        )
        assert json.loads(new.stdout)["spec"]["threads"] == 2
    finally:
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), check=False)
