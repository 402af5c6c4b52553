"""The chart rendered by the real helm binary: `helm lint --strict` and `helm template` for every
`ci/*-values.yaml` scenario, each template's options checked on the parsed objects, bad values rejected by
values.schema.json with a message naming the value, and the in-cluster load test's exact commands run for
real (a Locust master and a worker on loopback against a real `ferryman serve`) with the budget gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import helm
from tests.helpers.ports import free_port
from tests.helpers.servers import CliServer

CHART = helm.CHART
ROOT = helm.REPO_ROOT
SCENARIOS = helm.CI_VALUES
NAMESPACE = "ferryman-system"

pytestmark = pytest.mark.usefixtures("_helm")


@pytest.fixture(scope="module")
def _helm() -> None:
    helm.require_helm()


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix("-values.yaml") for p in paths]


# -- every scenario ---------------------------------------------------------------------------------------
def test_ci_scenarios_exist() -> None:
    names = set(_ids(SCENARIOS))
    assert {"default", "monitoring-on", "kserve-on", "ha", "loadtest-on", "namespaced"} <= names


@pytest.mark.parametrize("values_file", SCENARIOS, ids=_ids(SCENARIOS))
def test_lint_strict(values_file: Path) -> None:
    proc = helm.run_helm("lint", "--strict", str(CHART), "-f", str(values_file), "--namespace", NAMESPACE)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def _assert_restricted(obj: dict[str, Any]) -> None:
    """The Pod Security "restricted" level, as the PodSecurity admission plugin checks it."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    spec = helm.pod_spec(obj)
    pod_sc = spec.get("securityContext", {})
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
    assert all("hostPath" not in v for v in spec.get("volumes", [])), where
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert not sc.get("privileged"), where
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert c.get("resources", {}).get("requests"), f"{where}: {c['name']} has no resource requests"
        assert c.get("resources", {}).get("limits", {}).get("memory"), f"{where}: {c['name']} no memory limit"


@pytest.mark.parametrize("values_file", SCENARIOS, ids=_ids(SCENARIOS))
def test_template_scenario(values_file: Path) -> None:
    objs = helm.render([values_file], namespace=NAMESPACE)
    assert helm.by_kind(objs, "Deployment"), "no operator Deployment"
    seen: set[tuple[str, str | None, str]] = set()
    for obj in objs:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert len(meta["name"]) <= 63 or obj["kind"] in ("ClusterRole", "ClusterRoleBinding"), key
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "ferryman", key
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", key
        assert labels.get("app.kubernetes.io/part-of") == "ferryman", key
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterServingRuntime"):
            assert meta.get("namespace"), f"{key} has no namespace"
        if obj["kind"] in helm.POD_TEMPLATE_KINDS:
            _assert_restricted(obj)
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            selector = obj["spec"].get("selector", {}).get("matchLabels", {})
            assert selector.items() <= pod_labels.items(), key


# -- operator Deployment -------------------------------------------------------------------------------------
def _operator(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return helm.one(objs, "Deployment", "-operator")


def _env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return helm.container_env(helm.pod_spec(_operator(objs))["containers"][0])


def test_operator_defaults() -> None:
    objs = helm.render(namespace=NAMESPACE)
    deploy = _operator(objs)
    container = helm.pod_spec(deploy)["containers"][0]
    assert deploy["spec"]["replicas"] == 1
    assert container["image"] == "ghcr.io/ferryman-dev/ferryman:0.1.0"  # the chart's appVersion
    assert container["command"] == ["python", "-m", "ferryman_operator"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8081, "protocol": "TCP"}]
    env = _env(objs)
    assert env["FERRYMAN_HEALTH_ADDRESS"] == "0.0.0.0:8081"
    assert env["FERRYMAN_NAMESPACES"] == ""
    assert env["FERRYMAN_LEASE_NAMESPACE"] == NAMESPACE
    assert env["FERRYMAN_IMAGE"] == "ghcr.io/ferryman-dev/ferryman:0.1.0"
    assert helm.pod_spec(deploy)["serviceAccountName"] == helm.one(objs, "ServiceAccount")["metadata"]["name"]
    assert not helm.by_kind(objs, "PodDisruptionBudget")


def test_image_tag_digest_and_workload_image() -> None:
    objs = helm.render(values={"image": {"tag": "0.2.0-rc1"}})
    assert (
        helm.pod_spec(_operator(objs))["containers"][0]["image"] == "ghcr.io/ferryman-dev/ferryman:0.2.0-rc1"
    )
    digest = "sha256:" + "ab" * 32
    objs = helm.render(
        values={
            "image": {"repository": "registry.local/ferryman", "digest": digest},
            "workloads": {"image": "registry.local/ferryman-runtime:1.0"},
        }
    )
    assert helm.pod_spec(_operator(objs))["containers"][0]["image"] == f"registry.local/ferryman@{digest}"
    assert _env(objs)["FERRYMAN_IMAGE"] == "registry.local/ferryman-runtime:1.0"


def test_grpc_switch_reaches_the_operator_settings() -> None:
    """workloads.grpc.enabled becomes FERRYMAN_GRPC, which the operator's own settings parser reads."""
    from ferryman_operator.settings import from_env

    assert _env(helm.render())["FERRYMAN_GRPC"] == "false"
    assert not from_env({"FERRYMAN_GRPC": _env(helm.render())["FERRYMAN_GRPC"]}).grpc
    env = _env(helm.render(values={"workloads": {"grpc": {"enabled": True}}}))
    assert env["FERRYMAN_GRPC"] == "true" and from_env({"FERRYMAN_GRPC": env["FERRYMAN_GRPC"]}).grpc


def test_two_replicas_turn_leader_election_on() -> None:
    objs = helm.render([CHART / "ci" / "ha-values.yaml"], namespace=NAMESPACE)
    deploy = _operator(objs)
    env = _env(objs)
    assert deploy["spec"]["replicas"] == 2
    assert env["FERRYMAN_LEADER_ELECTION"] == "true"
    assert env["FERRYMAN_LEASE_SECONDS"] == "10"
    assert env["FERRYMAN_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # one identity per pod
    lease = helm.one(objs, "Lease")
    assert lease["metadata"]["name"] == env["FERRYMAN_LEASE_NAME"]
    assert lease["metadata"]["namespace"] == NAMESPACE
    pdb = helm.one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deploy["spec"]["selector"]
    anti = helm.pod_spec(deploy)["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"


def test_one_replica_without_leader_election_never_overlaps() -> None:
    objs = helm.render(values={"operator": {"leaderElection": {"enabled": False}}})
    assert _env(objs)["FERRYMAN_LEADER_ELECTION"] == "false"
    assert _operator(objs)["spec"]["strategy"] == {"type": "Recreate"}
    assert not helm.by_kind(objs, "Lease")
    assert not [r for r in helm.by_kind(objs, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def test_two_replicas_without_leader_election_rejected() -> None:
    err = helm.render_error({"operator": {"replicas": 2, "leaderElection": {"enabled": False}}})
    assert "operator.replicas=2 needs operator.leaderElection.enabled=true" in err


def test_namespaced_mode_uses_roles_not_a_clusterrole() -> None:
    objs = helm.render([CHART / "ci" / "namespaced-values.yaml"], namespace=NAMESPACE)
    assert not helm.by_kind(objs, "ClusterRole") and not helm.by_kind(objs, "ClusterRoleBinding")
    roles = {
        r["metadata"]["namespace"]: r
        for r in helm.by_kind(objs, "Role")
        if r["metadata"]["name"].endswith("-operator")
    }
    assert set(roles) == {"models", "models-staging"}
    bindings = {
        b["metadata"]["namespace"]: b
        for b in helm.by_kind(objs, "RoleBinding")
        if b["metadata"]["name"].endswith("-operator")
    }
    assert set(bindings) == set(roles)
    sa = helm.one(objs, "ServiceAccount")["metadata"]
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    assert _env(objs)["FERRYMAN_NAMESPACES"] == "models,models-staging"
    # The default scenario is cluster-wide: one ClusterRole bound to the same ServiceAccount.
    default = helm.render(namespace=NAMESPACE)
    assert helm.one(default, "ClusterRoleBinding")["subjects"][0]["name"] == sa["name"]
    assert not [r for r in helm.by_kind(default, "Role") if r["metadata"]["name"].endswith("-operator")]


def test_existing_serviceaccount() -> None:
    objs = helm.render(values={"serviceAccount": {"create": False, "name": "platform-operator"}})
    assert not helm.by_kind(objs, "ServiceAccount")
    assert helm.pod_spec(_operator(objs))["serviceAccountName"] == "platform-operator"
    assert helm.one(objs, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-operator"
    err = helm.render_error({"serviceAccount": {"create": False}})
    assert "serviceAccount.create=false needs serviceAccount.name" in err


def test_rbac_off_renders_no_roles() -> None:
    objs = helm.render(values={"rbac": {"create": False}})
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


# -- monitoring ----------------------------------------------------------------------------------------------
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def _dashboards(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in helm.by_kind(objs, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]


def test_monitoring_off_by_default() -> None:
    objs = helm.render()
    assert not [o for o in objs if o["kind"] in MONITORING_KINDS]
    assert _dashboards(objs) == []


def test_servicemonitor_with_release_label() -> None:
    objs = helm.render([CHART / "ci" / "servicemonitor-values.yaml"], namespace=NAMESPACE)
    assert not helm.by_kind(objs, "PodMonitor")
    sm = helm.one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"any": True}
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "ferryman-operator"}
    assert sm["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_monitors_select_what_the_operator_labels() -> None:
    """The selectors match the labels and port names ferryman_operator puts on gateways and version
    servers."""
    from ferryman_operator import names
    from ferryman_operator.backends import workloads

    objs = helm.render(values={"monitoring": {"podMonitor": {"enabled": True}}})
    selector = helm.one(objs, "PodMonitor")["spec"]["selector"]
    for component in (names.COMPONENT_GATEWAY, names.COMPONENT_MODEL):
        labels = names.labels("m", component, "v1")
        assert selector["matchLabels"].items() <= labels.items()
        for expr in selector["matchExpressions"]:
            assert expr["operator"] == "In" and labels[expr["key"]] in expr["values"]
    endpoint = helm.one(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["portNumber"] == workloads.HTTP_PORT
    assert endpoint["path"] == workloads.scrape_annotations()["prometheus.io/path"]
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())  # the kserve backend's version servers: same port
    assert runtime["spec"]["containers"][0]["ports"][0]["containerPort"] == workloads.HTTP_PORT


def test_monitoring_scenario_podmonitor_rules_dashboards() -> None:
    objs = helm.render([CHART / "ci" / "monitoring-on-values.yaml"], namespace=NAMESPACE)
    assert not helm.by_kind(objs, "ServiceMonitor")
    for kind in ("PodMonitor", "PrometheusRule"):
        labels = helm.one(objs, kind)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack" and labels["team"] == "ml-platform", kind
    assert (
        _env(objs)["FERRYMAN_PROMETHEUS_URL"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    )


def test_release_label_can_be_dropped() -> None:
    objs = helm.render(values={"monitoring": {"release": "", "prometheusRule": {"enabled": True}}})
    assert "release" not in helm.one(objs, "PrometheusRule")["metadata"]["labels"]


def test_both_monitors_rejected() -> None:
    err = helm.render_error(
        {"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}}
    )
    assert "scraped twice" in err


def test_prometheusrule_carries_the_alert_rules_file() -> None:
    objs = helm.render(values={"monitoring": {"prometheusRule": {"enabled": True}}})
    rule = helm.one(objs, "PrometheusRule")
    source = yaml.safe_load((ROOT / "monitoring" / "alerts" / "ferryman-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "FerrymanLatencyBudgetBurn" in alerts
    generated = ROOT / "monitoring" / "alerts" / "ferryman-prometheusrule.yaml"
    if generated.is_file():  # the observability engineer's own PrometheusRule: the same groups
        assert yaml.safe_load(generated.read_text())["spec"]["groups"] == rule["spec"]["groups"]


def test_dashboards_as_configmaps_for_the_grafana_sidecar() -> None:
    objs = helm.render(
        values={
            "monitoring": {
                "dashboards": {
                    "enabled": True,
                    "namespace": "grafana",
                    "annotations": {"grafana_folder": "ferryman"},
                }
            }
        }
    )
    cms = _dashboards(objs)
    sources = sorted((ROOT / "monitoring" / "dashboards").glob("*.json"))
    assert len(cms) == len(sources) >= 3
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "grafana"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "ferryman"}
        [(key, text)] = cm["data"].items()
        assert json.loads(text) == json.loads((ROOT / "monitoring" / "dashboards" / key).read_text())
    custom = helm.render(
        values={
            "monitoring": {"dashboards": {"enabled": True, "label": "dashboards", "labelValue": "ferryman"}}
        }
    )
    labels = [c["metadata"]["labels"] for c in helm.by_kind(custom, "ConfigMap")]
    assert all(lab.get("dashboards") == "ferryman" for lab in labels if "dashboards" in lab)
    assert sum("dashboards" in lab for lab in labels) == len(sources)


# -- KServe --------------------------------------------------------------------------------------------------
def test_kserve_switch() -> None:
    off = helm.render()
    assert not helm.by_kind(off, "ClusterServingRuntime")
    on = helm.render([CHART / "ci" / "kserve-on-values.yaml"], namespace=NAMESPACE)
    runtime = helm.one(on, "ClusterServingRuntime")
    assert runtime["metadata"]["name"] == "ferryman-onnx" == _env(on)["FERRYMAN_KSERVE_RUNTIME"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert {"name": "onnx", "autoSelect": True}.items() <= formats[0].items()
    assert set(runtime["spec"]["protocolVersions"]) == {"v1", "v2"}
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["image"] == "ghcr.io/ferryman-dev/ferryman:0.1.0"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert container["command"] == ["python", "-m", "ferryman_runtimes.kserve"]
    assert "--model_name={{.Name}}" in container["args"]  # KServe's placeholder, not a Helm template
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["runAsNonRoot"] is True


RUNTIME_FILE = ROOT / "runtimes" / "ferryman_runtimes" / "kserve" / "clusterservingruntime.yaml"


def test_clusterservingruntime_matches_the_runtimes_manifest() -> None:
    """The chart's ClusterServingRuntime is the runtime's committed one, apart from image, resources and the
    chart's labels (values)."""
    committed = yaml.safe_load(RUNTIME_FILE.read_text())
    container = committed["spec"]["containers"][0]
    objs = helm.render(
        values={
            "kserve": {
                "enabled": True,
                "runtime": {"image": container["image"], "resources": container["resources"]},
            }
        }
    )
    rendered = helm.one(objs, "ClusterServingRuntime")
    assert rendered["apiVersion"] == committed["apiVersion"] and rendered["kind"] == committed["kind"]
    assert rendered["metadata"]["name"] == committed["metadata"]["name"]
    assert rendered["spec"] == committed["spec"]
    # With values: image, resources and pull secrets replaced, nothing else.
    resources = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    objs = helm.render(
        values={
            "imagePullSecrets": [{"name": "ghcr"}],
            "kserve": {"enabled": True, "runtime": {"image": "registry.local/rt:2", "resources": resources}},
        }
    )
    spec = helm.one(objs, "ClusterServingRuntime")["spec"]
    assert spec.pop("imagePullSecrets") == [{"name": "ghcr"}]
    got = spec["containers"][0]
    assert (got.pop("image"), got.pop("resources")) == ("registry.local/rt:2", resources)
    want = committed["spec"]["containers"][0]
    assert got == {k: v for k, v in want.items() if k not in ("image", "resources")}


# -- load test -----------------------------------------------------------------------------------------------
def _loadtest(
    objs: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    jobs = helm.by_kind(objs, "Job")
    master = next(
        j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "loadtest-master"
    )
    worker = next(
        j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "loadtest-worker"
    )
    service = helm.one(objs, "Service", "-loadtest-master")
    config = helm.one(objs, "ConfigMap", "-loadtest")
    return master, worker, service, config


def test_loadtest_off_by_default() -> None:
    objs = helm.render()
    assert not helm.by_kind(objs, "Job") and not helm.by_kind(objs, "Service")


def test_loadtest_scenario() -> None:
    objs = helm.render([CHART / "ci" / "loadtest-on-values.yaml"], namespace=NAMESPACE)
    master, worker, service, config = _loadtest(objs)
    m_args = helm.pod_spec(master)["containers"][0]["args"]
    w_args = helm.pod_spec(worker)["containers"][0]["args"]
    assert "--host=http://breast-cancer.models.svc:8080" in m_args  # the ModelDeployment's gateway Service
    assert "--expect-workers=4" in m_args and "--users=200" in m_args and "--run-time=5m" in m_args
    assert worker["spec"]["parallelism"] == worker["spec"]["completions"] == 4
    assert master["spec"]["backoffLimit"] == 0  # a failed gate is a verdict, not a crash to retry
    assert f"--master-host={service['metadata']['name']}" in w_args
    # The master Service selects exactly this run's master pod.
    pod_labels = master["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "loadtest-master" in service["spec"]["selector"].values()
    for job in (master, worker):
        env = helm.container_env(helm.pod_spec(job)["containers"][0])
        assert env["FERRYMAN_LT_BUDGET_MS"] == "100" and env["FERRYMAN_LT_MAX_ERROR_RATE"] == "0.01"
        assert env["FERRYMAN_LT_PROTOCOL"] == "v2-binary" and env["FERRYMAN_LT_SHAPE"] == "ramp"
        assert job["metadata"]["name"].endswith("-r1")  # one run per release revision
    # The ConfigMap carries ferryman's locustfile (the chart's synced copy) and the gate.
    copies = CHART / "files" / "loadtest"
    assert config["data"]["locustfile.py"] == (copies / "loadtests" / "locustfile.py").read_text().rstrip(
        "\n"
    )
    assert config["data"]["ferryman_budget_gate.py"] == (
        copies / "ferryman_budget_gate.py"
    ).read_text().rstrip("\n")


def test_loadtest_explicit_host_and_revision() -> None:
    objs = helm.render(
        values={"loadtest": {"enabled": True, "target": {"host": "http://gw.example:9000"}}},
        extra=["--is-upgrade"],
    )
    master, _, _, _ = _loadtest(objs)
    assert "--host=http://gw.example:9000" in helm.pod_spec(master)["containers"][0]["args"]


# -- bad values ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": -1}}, "at '/operator/replicas': minimum: got -1, want 0"),
        ({"operatorr": {"replicas": 1}}, "additional properties 'operatorr' not allowed"),
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
        ({"operator": {"logLevel": "LOUD"}}, "at '/operator/logLevel'"),
        ({"monitoring": {"release": 7}}, "at '/monitoring/release': got number, want string"),
        (
            {"workloads": {"grpc": {"enabled": "yes"}}},
            "at '/workloads/grpc/enabled': got string, want boolean",
        ),
        ({"workloads": {"grpc": {"port": 9000}}}, "at '/workloads/grpc'"),
        ({"loadtest": {"budget": {"p99Ms": 0}}}, "at '/loadtest/budget/p99Ms'"),
        ({"prometheus": {"url": "not a url"}}, "at '/prometheus/url'"),
        ({"operator": {"resources": {"requests": {"cpu": "lots"}}}}, "at '/operator/resources/requests/cpu'"),
    ],
)
def test_bad_values_rejected_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    err = helm.render_error(values)
    assert "values don't meet the specifications of the schema" in err
    assert message in err


# -- the in-cluster load test, run for real on loopback ------------------------------------------------------
def _materialize(config: dict[str, Any], where: Path) -> dict[str, str]:
    """Lay the ConfigMap out as its volume items do; returns {container path: local path}."""
    volume = next(v for v in config["__volumes"] if v["name"] == "locustfiles")
    root = where / "opt-ferryman-loadtest"
    for item in volume["configMap"]["items"]:
        path = root / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config["data"][item["key"]] + "\n")
    return {"/opt/ferryman-loadtest": str(root)}


def _local_command(job: dict[str, Any], mapping: dict[str, str], flags: dict[str, str]) -> list[str]:
    """The Job's container command with the ConfigMap mount mapped to a local directory and the given
    ``--flag=value`` arguments replaced (addresses inside the cluster become loopback ones)."""
    container = helm.pod_spec(job)["containers"][0]
    assert container["command"] == ["python", "-m", "locust"]
    args = []
    for arg in container["args"]:
        for remote, local in mapping.items():
            arg = arg.replace(remote, local)
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={flags[flag]}" if flag in flags else arg)
    return [sys.executable, "-m", "locust", *args]


@pytest.fixture
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _start_distributed(
    tmp: Path, server: CliServer, data: Path, budget_ms: float, procs: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Start the rendered master and worker commands; returns both (the master's stdout is piped)."""
    objs = helm.render(
        values={
            "loadtest": {
                "enabled": True,
                "users": 4,
                "spawnRate": 4,
                "duration": "3s",
                "shape": "none",
                "workers": {"replicas": 1},
                "expectWorkersMaxWait": 60,
                "target": {"host": server.url},
                "budget": {"p99Ms": budget_ms, "maxErrorRate": 0.01},
            }
        }
    )
    master, worker, _, config = _loadtest(objs)
    config["__volumes"] = helm.pod_spec(master)["volumes"]
    tmp.mkdir(parents=True)
    mapping = _materialize(config, tmp)
    port = str(free_port())
    master_cmd = [
        *_local_command(master, mapping, {"--master-bind-port": port}),
        "--master-bind-host=127.0.0.1",
    ]
    worker_cmd = _local_command(worker, mapping, {"--master-host": "127.0.0.1", "--master-port": port})
    assert any(a.startswith("--master-host=") for a in helm.pod_spec(worker)["containers"][0]["args"])
    env = {**os.environ, "FERRYMAN_LT_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    for e in helm.pod_spec(master)["containers"][0]["env"]:
        if e["name"] != "HOME":
            env[e["name"]] = e["value"]
    m = subprocess.Popen(
        master_cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=tmp,
    )
    w = subprocess.Popen(
        worker_cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=tmp,
        text=True,
    )
    procs += [m, w]
    return m, w


def _gate_result(master: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, _ = master.communicate(timeout=150)
    lines = [ln for ln in out.splitlines() if ln.startswith("ferryman-budget-gate: ")]
    assert len(lines) == 1, out[-3000:]
    return master.returncode, json.loads(lines[0].split(": ", 1)[1]), out


def test_in_cluster_loadtest_commands_gate_the_budget(
    tmp_path: Path, native_server: CliServer, sample_models: Any, _processes: list[subprocess.Popen[str]]
) -> None:
    """The master and worker commands the chart renders, run as processes on loopback against a real
    server: the master collects every request's exact time from the worker and gates on the budget.
    Two runs at once: one with a budget any request meets, one with a budget no request can meet."""
    data = Path(sample_models.directory) / "traffic.npy"
    generous, worker1 = _start_distributed(tmp_path / "pass", native_server, data, 60_000, _processes)
    impossible, worker2 = _start_distributed(tmp_path / "fail", native_server, data, 0.001, _processes)

    code, report, out = _gate_result(generous)
    assert code == 0, out[-3000:]
    assert report["passed"] is True and report["mode"] == "distributed"
    assert report["requests"] > 0 and report["failures"] == 0
    # Exact times arrive with Locust's own reports, so both count the same requests.
    assert report["requests"] == report["locust_requests"]
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]

    code, report, out = _gate_result(impossible)
    assert code == 1, out[-3000:]
    assert report["passed"] is False and report["requests"] > 0
    assert any("exceeds the 0.001 ms budget" in r for r in report["reasons"])
    for worker in (worker1, worker2):  # workers finish cleanly when their master quits
        assert worker.wait(timeout=60) == 0
