"""The KServe and KubeRay contracts without a cluster. What ships is checked against the upstream CRD schemas:
the operator's InferenceServices (``ferryman_operator.backends.kserve``, the only builder), the
``ferryman-onnx`` ClusterServingRuntime (the committed file and the Helm chart's rendering of it) and the ray
backend's RayService. Then the runtime's arguments and resources as KServe assembles them, and model-directory
layouts.

The CRDs come from ``tests.helpers.upstream_crds``: ``scripts/cluster/crds.sh`` fetches them once from their
projects' Go modules (``go mod download`` through the Go module proxy, the only network use here) into
``~/.cache/ferryman/crds/`` and afterwards only names that directory. The chart is rendered by the real
``helm template``. The cluster tests (tests/cluster) have the apiserver itself accept the same objects.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman import rollout
from ferryman.errors import ModelStoreError
from ferryman.serve_config import parse_cpu, parse_memory
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman_operator.backends import kserve
from ferryman_operator.backends.base import Context
from ferryman_operator.backends.ray import RayBackend
from ferryman_operator.settings import Settings
from ferryman_runtimes.kserve.__main__ import parse
from ferryman_runtimes.kserve.server import find_model_file
from tests.helpers import helm
from tests.helpers import upstream_crds as crds

RUNTIME_FILE = helm.REPO_ROOT / "runtimes" / "ferryman_runtimes" / "kserve" / "clusterservingruntime.yaml"
OWNER = {
    "apiVersion": "serving.ferryman.dev/v1alpha1",
    "kind": "ModelDeployment",
    "name": "breast-cancer",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def assert_accepted(obj: dict[str, Any], filename: str, version: str) -> None:
    """Fails, listing them, on everything the apiserver would refuse (strict field validation)."""
    found = crds.problems(obj, filename, version)
    assert not found, f"{obj['kind']} {obj['metadata'].get('name')}:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def md(sample_models) -> ModelDeployment:
    doc = yaml.safe_load(Path(sample_models.spec).read_text())
    doc["metadata"]["namespace"] = "models"
    for v in doc["spec"]["versions"]:
        v["uri"] = f"s3://models/breast-cancer/{v['name']}/model.onnx"
    doc["spec"]["versions"][1]["replicas"] = 3
    doc["spec"]["versions"][1]["resources"] = {"cpu": "2", "memory": "256Mi"}  # above the runtime's limit
    doc["spec"]["threads"] = 2
    return parse_deployment(doc)


def context(md: ModelDeployment) -> Context:
    state, _ = rollout.start(md, now=0.0)
    return Context(
        md=md,
        namespace="models",
        owner=OWNER,
        state=state,
        table=rollout.table_for(md, state),
        settings=Settings(
            image="registry.example/ferryman:1.2.3", ray_image="rayproject/ray:2.60.0", identity="t"
        ),
    )


@pytest.fixture(scope="module")
def ctx(md: ModelDeployment) -> Context:
    return context(md)


def committed_runtime() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RUNTIME_FILE.read_text())
    return doc


@pytest.fixture(scope="module")
def chart_runtimes() -> dict[str, dict[str, Any]]:
    """The chart's ClusterServingRuntime as installed: default kserve values and the kserve-on CI values."""
    return {
        "default": helm.one(helm.render(values={"kserve": {"enabled": True}}), "ClusterServingRuntime"),
        "kserve-on": helm.one(
            helm.render([helm.CHART / "ci" / "kserve-on-values.yaml"]), "ClusterServingRuntime"
        ),
    }


# -- what ships, against the upstream schemas ---------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_inference_services_match_the_upstream_crd(ctx: Context, version: str) -> None:
    assert_accepted(kserve.inference_service(ctx, version), crds.INFERENCE_SERVICES, "v1beta1")


def test_every_inference_service_the_backend_writes_matches(ctx: Context) -> None:
    written = [o for o in kserve.KServeBackend().desired(ctx) if o["kind"] == "InferenceService"]
    assert [o["metadata"]["name"] for o in written] == ["breast-cancer-v1", "breast-cancer-v2"]
    for isvc in written:
        assert_accepted(isvc, crds.INFERENCE_SERVICES, "v1beta1")


def test_inference_services_with_grpc_on_match_the_upstream_crd(ctx: Context) -> None:
    grpc_on = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, grpc=True))
    for isvc in (o for o in kserve.KServeBackend().desired(grpc_on) if o["kind"] == "InferenceService"):
        assert isvc["spec"]["predictor"]["model"]["ports"][1]["containerPort"] == 8081
        assert_accepted(isvc, crds.INFERENCE_SERVICES, "v1beta1")


def test_committed_cluster_serving_runtime_matches_the_upstream_crd() -> None:
    assert_accepted(committed_runtime(), crds.CLUSTER_SERVING_RUNTIMES, "v1alpha1")


@pytest.mark.parametrize("values", ["default", "kserve-on"])
def test_chart_cluster_serving_runtime_matches_the_upstream_crd(
    chart_runtimes: dict[str, dict[str, Any]], values: str
) -> None:
    assert_accepted(chart_runtimes[values], crds.CLUSTER_SERVING_RUNTIMES, "v1alpha1")


def test_ray_service_matches_the_upstream_crd(ctx: Context) -> None:
    (rs,) = RayBackend().desired(ctx)
    assert rs["apiVersion"] == "ray.io/v1"
    assert_accepted(rs, crds.RAY_SERVICES, "v1")


def test_chart_monitoring_objects_match_the_prometheus_operator_crds() -> None:
    files = {
        "ServiceMonitor": crds.SERVICE_MONITORS,
        "PodMonitor": crds.POD_MONITORS,
        "PrometheusRule": crds.PROMETHEUS_RULES,
    }
    objs = helm.render([helm.CHART / "ci" / "monitoring-on-values.yaml"])
    objs += helm.render(values={"monitoring": {"serviceMonitor": {"enabled": True}}})
    checked = [o for o in objs if o["kind"] in files]
    assert {o["kind"] for o in checked} == set(files)
    for obj in checked:
        assert_accepted(obj, files[obj["kind"]], obj["apiVersion"].split("/")[1])


def test_kserve_crds_follow_the_locked_kserve_package() -> None:
    """The CRDs' KServe release (scripts/cluster/env.sh) is the kserve package's in the lock, or the one
    before it when the Go module proxy does not serve that one (docs/cluster.md, "Upstream CRDs")."""
    env_sh = (helm.REPO_ROOT / "scripts" / "cluster" / "env.sh").read_text()
    pinned = re.search(r"FERRYMAN_KSERVE_VERSION:=v(\d+)\.(\d+)\.\d+", env_sh)
    locked = re.search(
        r"^kserve==(\d+)\.(\d+)\.\d+$", (helm.REPO_ROOT / "requirements" / "lock.txt").read_text(), re.M
    )
    assert pinned and locked
    (pin_major, pin_minor), (lock_major, lock_minor) = map(int, pinned.groups()), map(int, locked.groups())
    assert pin_major == lock_major and lock_minor - 1 <= pin_minor <= lock_minor
    crd_versions = {v["name"] for v in crds.crd(crds.INFERENCE_SERVICES)["spec"]["versions"]}
    assert "v1beta1" in crd_versions  # what the operator writes


# -- the checks fail when they should ------------------------------------------------------------------------
def test_an_unknown_field_in_the_builder_fails_the_schema_test(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder gains a field KServe does not know (``limit`` for ``limits``): the test above fails."""
    monkeypatch.setattr(
        kserve, "predictor_resources", lambda r: {"requests": {"cpu": r.cpu}, "limit": {"cpu": r.cpu}}
    )
    with pytest.raises(AssertionError, match=r"\.spec\.predictor\.model\.resources\.limit: unknown field"):
        test_inference_services_match_the_upstream_crd(ctx, "v1")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (["spec"], "predictorr"),
        (["spec", "predictor"], "minReplica"),
        (["spec", "predictor", "model"], "threads"),  # a ModelDeployment field, not KServe's
        (["spec", "predictor", "securityContext"], "readOnlyRootFilesystem"),  # a container field on the pod
    ],
)
def test_unknown_fields_in_an_inference_service_are_refused(
    ctx: Context, path: list[str], field: str
) -> None:
    isvc = copy.deepcopy(kserve.inference_service(ctx, "v1"))  # it shares the security contexts' dicts
    node = isvc
    for key in path:
        node = node[key]
    node[field] = True
    problems = crds.problems(isvc, crds.INFERENCE_SERVICES, "v1beta1")
    assert problems == [f".{'.'.join(path)}.{field}: unknown field"]


def test_wrong_types_in_an_inference_service_are_refused(ctx: Context) -> None:
    isvc = copy.deepcopy(kserve.inference_service(ctx, "v1"))
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    (problem,) = crds.problems(isvc, crds.INFERENCE_SERVICES, "v1beta1")
    assert problem.startswith("spec.predictor.minReplicas: 'two' is not of type 'integer'")


def test_unknown_fields_in_the_runtime_and_the_ray_service_are_refused(ctx: Context) -> None:
    runtime = committed_runtime()
    runtime["spec"]["containers"][0]["readinessProbes"] = {}
    assert crds.problems(runtime, crds.CLUSTER_SERVING_RUNTIMES, "v1alpha1") == [
        ".spec.containers[0].readinessProbes: unknown field"
    ]
    (rs,) = copy.deepcopy(RayBackend().desired(ctx))
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["replicas"] = 1
    assert crds.problems(rs, crds.RAY_SERVICES, "v1") == [
        ".spec.rayClusterConfig.headGroupSpec.replicas: unknown field"
    ]


def test_the_pruning_check_follows_the_schema_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kept": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"a": {}}}},
            "list": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}},
            "embedded": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "properties": {"spec": {}},
            },
            "opaque": {"type": "object"},
        },
    }
    obj = {
        "apiVersion": "v1",
        "kind": "K",
        "metadata": {"anything": 1},
        "kept": {"x": 1},
        "map": {"k": {"a": 1, "b": 2}},
        "list": [{"a": 1}, {"c": 1}],
        "embedded": {"apiVersion": "v1", "kind": "K", "metadata": {}, "spec": {}, "other": 1},
        "opaque": {"x": 1},
    }
    assert crds.unknown_fields(obj, schema) == [".map.k.b", ".list[1].c", ".embedded.other", ".opaque.x"]


# -- the runtime as KServe assembles it ----------------------------------------------------------------------
def test_cluster_serving_runtime_contract() -> None:
    rt = committed_runtime()
    assert (
        rt["metadata"]["name"]
        == "ferryman-onnx"
        == Settings(image="i", ray_image="r", identity="t").kserve_runtime
    )
    spec = rt["spec"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["onnx"]
    assert spec["protocolVersions"] == ["v1", "v2"]
    [c] = spec["containers"]
    assert c["name"] == "kserve-container"  # the container KServe merges the predictor into
    assert c["command"] == ["python", "-m", "ferryman_runtimes.kserve"]
    assert c["args"] == ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert set(c["resources"]) == {"requests", "limits"}
    # the root filesystem is read-only: /tmp (where --workers keeps its shared metrics files) is a volume
    assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"]
    assert "tmp" in {v["name"] for v in spec["volumes"]}


def test_security_context_is_restricted_compliant(ctx: Context) -> None:
    runtime_sc = committed_runtime()["spec"]["containers"][0]["securityContext"]
    predictor = kserve.inference_service(ctx, "v1")["spec"]["predictor"]
    # KServe merges the predictor's container securityContext into the runtime's, key by key
    for sc in (runtime_sc, {**runtime_sc, **predictor["model"]["securityContext"]}):
        # Pod Security Standards, "restricted" profile
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert sc.get("privileged", False) is False
        assert sc.get("runAsUser", 1) != 0
        assert sc["readOnlyRootFilesystem"] is True
    assert predictor["securityContext"]["runAsNonRoot"] is True


def test_runtime_arguments_as_kserve_assembles_them(ctx: Context) -> None:
    """KServe substitutes {{.Name}} and appends the predictor's args to the runtime's; the last one wins."""
    isvc = kserve.inference_service(ctx, "v2")
    [container] = committed_runtime()["spec"]["containers"]
    runtime_args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
    options = parse(runtime_args + isvc["spec"]["predictor"]["model"]["args"])
    assert options.model_name == "breast-cancer"  # the ModelDeployment's name, not the InferenceService's
    assert options.model_version == "v2"
    assert options.model_dir == "/mnt/models"
    assert options.http_port == 8080
    plain = parse(runtime_args)
    assert plain.model_name == "breast-cancer-v2"


def test_threads_reach_the_runtime(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec's ``threads`` travel as FERRYMAN_THREADS in the predictor's env, which the runtime reads."""
    model = kserve.inference_service(ctx, "v1")["spec"]["predictor"]["model"]
    env = {e["name"]: e["value"] for e in model["env"]}
    assert env["FERRYMAN_THREADS"] == "2" == str(ctx.md.spec.threads)
    monkeypatch.setenv("FERRYMAN_THREADS", env["FERRYMAN_THREADS"])
    assert parse(["--model_name", "m"]).threads == 2


def merged_resources(runtime: dict[str, Any], predictor: dict[str, Any]) -> dict[str, dict[str, str]]:
    """KServe's merge of the predictor's resources into the runtime container's (a strategic merge patch:
    maps merged key by key, the predictor's value wins)."""
    out: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        out[part] = {**runtime.get(part, {}), **predictor.get(part, {})}
    return out


@pytest.mark.parametrize("values", ["committed", "default", "kserve-on"])
def test_merged_requests_never_exceed_limits(
    ctx: Context, chart_runtimes: dict[str, dict[str, Any]], values: str
) -> None:
    """v2 asks for 2 CPUs, above every runtime's CPU limit: the predictor's own limits must win."""
    runtime = committed_runtime() if values == "committed" else chart_runtimes[values]
    runtime_resources = runtime["spec"]["containers"][0]["resources"]
    for v in ctx.md.spec.versions:
        predictor = kserve.inference_service(ctx, v.name)["spec"]["predictor"]["model"]["resources"]
        merged = merged_resources(runtime_resources, predictor)
        assert merged["requests"] == {"cpu": v.resources.cpu, "memory": v.resources.memory}
        assert parse_cpu(merged["requests"]["cpu"]) <= parse_cpu(merged["limits"]["cpu"]), (v.name, merged)
        assert parse_memory(merged["requests"]["memory"]) <= parse_memory(merged["limits"]["memory"])


def test_unknown_versions_are_refused(ctx: Context) -> None:
    with pytest.raises(KeyError):
        kserve.inference_service(ctx, "v9")


def test_defaults_follow_the_kserve_contract() -> None:
    options = parse(["--model_name", "m"])
    assert (options.model_dir, options.http_port, options.host) == ("/mnt/models", 8080, "0.0.0.0")


# -- model directory layouts (as the storage initializer leaves them) -------------------------------
def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx")
    return path


def test_model_file_discovery(tmp_path: Path) -> None:
    d = tmp_path / "a"
    want = _touch(d / "model.onnx")
    _touch(d / "other.onnx")
    assert find_model_file(d) == want  # model.onnx wins
    d = tmp_path / "b"
    want = _touch(d / "gbt-v3.onnx")
    (d / "README.md").write_text("x")
    assert find_model_file(d) == want  # the single .onnx file
    d = tmp_path / "c"
    want = _touch(d / "1" / "model.onnx")
    assert find_model_file(d) == want  # versioned sub-directory
    assert find_model_file(want) == want  # a file given directly


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "no .onnx model file"),
        (["x.onnx", "y.onnx"], "several ONNX files"),
        (["weights.bin"], "weights.bin"),
    ],
)
def test_model_file_discovery_errors(tmp_path: Path, files: list[str], message: str) -> None:
    d = tmp_path / "models"
    d.mkdir()
    for f in files:
        _touch(d / f)
    with pytest.raises(ModelStoreError, match=message):
        find_model_file(d)


def test_missing_model_dir_names_the_storage_initializer(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="storage initializer"):
        find_model_file(tmp_path / "nope")


def test_threads_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRYMAN_THREADS", "3")
    assert parse(["--model_name", "m"]).threads == 3
    assert parse(["--model_name", "m", "--threads", "2"]).threads == 2
