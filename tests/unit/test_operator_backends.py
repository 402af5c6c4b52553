"""The objects each backend describes (pure): names, ownership, restricted pod security, the routes and
version ConfigMaps, InferenceServices, the RayService and readiness from observed objects. The cluster tests
have the apiserver (and the upstream CRD schemas) accept them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from ferryman import rollout
from ferryman.routes import backends_from_dict, table_from_json
from ferryman.spec import ModelDeployment, Runtime, parse_deployment
from ferryman_operator import names
from ferryman_operator.backends import workloads
from ferryman_operator.backends.base import Context, deployment_ready
from ferryman_operator.backends.factory import all_kinds, backend_for
from ferryman_operator.backends.kserve import KServeBackend
from ferryman_operator.backends.native import NativeBackend, uri_problems
from ferryman_operator.backends.ray import RayBackend
from ferryman_operator.settings import Settings

OWNER = {
    "apiVersion": "serving.ferryman.dev/v1alpha1",
    "kind": "ModelDeployment",
    "name": "m",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def md(runtime: str = "native", **spec: Any) -> ModelDeployment:
    doc: dict[str, Any] = {
        "runtime": runtime,
        "versions": [
            {"name": "v1", "uri": "https://h/v1.onnx", "replicas": 2},
            {"name": "v2", "uri": "https://h/v2.onnx", "resources": {"cpu": "2", "memory": "1Gi"}},
        ],
    }
    doc.update(spec)
    return ModelDeployment.model_validate({"metadata": {"name": "m"}, "spec": doc})


def ctx(m: ModelDeployment, weights: dict[str, int] | None = None) -> Context:
    state, _ = rollout.start(m, now=0.0)
    if weights is not None:
        state = replace(state, weights=weights)
    return Context(
        md=m,
        namespace="ns",
        owner=OWNER,
        state=state,
        table=rollout.table_for(m, state),
        settings=Settings(image="img:1", ray_image="ray:1", identity="t"),
    )


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for o in objects:
        if o["kind"] == "Deployment":
            out.append(o["spec"]["template"]["spec"])
        if o["kind"] == "RayService":
            cluster = o["spec"]["rayClusterConfig"]
            out += [cluster["headGroupSpec"]["template"]["spec"]]
            out += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return out


def test_native_objects() -> None:
    c = ctx(md(), weights={"v1": 90, "v2": 10})
    objects = by_kind(NativeBackend().desired(c))
    assert set(objects) == {
        ("ConfigMap", "m-versions"),
        ("Deployment", "m-v1"),
        ("Service", "m-v1"),
        ("Deployment", "m-v2"),
        ("Service", "m-v2"),
        ("ConfigMap", "m-routes"),
        ("Deployment", "m-gateway"),
        ("Service", "m"),
    }
    for obj in objects.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "ns" and meta["ownerReferences"] == [OWNER]
        assert meta["labels"][names.LABEL_DEPLOYMENT] == "m"
        assert meta["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
    v1 = objects[("Deployment", "m-v1")]
    assert v1["spec"]["replicas"] == 2
    template = v1["spec"]["template"]
    assert v1["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert objects[("Service", "m-v1")]["spec"]["selector"] == v1["spec"]["selector"]["matchLabels"]
    container = template["spec"]["containers"][0]
    assert container["image"] == "img:1"
    # the program is named: the image's ENTRYPOINT is the KServe runtime, which must never get these args
    assert container["command"] == ["ferryman"]
    assert container["args"] == [
        "serve",
        "/etc/ferryman/spec/model.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    v2 = objects[("Deployment", "m-v2")]["spec"]["template"]["spec"]["containers"][0]
    assert v2["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}

    specs = objects[("ConfigMap", "m-versions")]["data"]
    single = parse_deployment(yaml.safe_load(specs["v2.yaml"]))
    assert [v.name for v in single.spec.versions] == ["v2"] and single.spec.traffic.stable == "v2"

    routes = objects[("ConfigMap", "m-routes")]["data"]["routes.json"]
    assert table_from_json(routes).weights == (("v1", 90), ("v2", 10))
    assert backends_from_dict(yaml.safe_load(routes)) == {
        "v1": "http://m-v1.ns.svc.cluster.local:8080",
        "v2": "http://m-v2.ns.svc.cluster.local:8080",
    }
    gateway = objects[("Deployment", "m-gateway")]["spec"]["template"]["spec"]
    assert gateway["volumes"][0] == {"name": "routes", "configMap": {"name": "m-routes"}}
    assert NativeBackend().endpoint(c.md, "ns") == "http://m.ns.svc.cluster.local:8080"


def test_version_pods_roll_only_when_their_own_spec_changes() -> None:
    def hashes(m: ModelDeployment) -> dict[str, str]:
        objs = by_kind(NativeBackend().desired(ctx(m)))
        return {
            v: objs[("Deployment", f"m-{v}")]["spec"]["template"]["metadata"]["annotations"][
                names.ANNOTATION_SPEC_HASH
            ]
            for v in ("v1", "v2")
        }

    base = hashes(md())
    changed = md()
    changed.spec.versions[1].uri = "https://h/v2-fixed.onnx"
    after = hashes(changed)
    assert after["v1"] == base["v1"] and after["v2"] != base["v2"]
    # a traffic step changes only the routes ConfigMap
    a = by_kind(NativeBackend().desired(ctx(md(), {"v1": 90, "v2": 10})))
    b = by_kind(NativeBackend().desired(ctx(md(), {"v1": 50, "v2": 50})))
    assert [k for k in a if a[k] != b[k]] == [("ConfigMap", "m-routes")]


@pytest.mark.parametrize("runtime", ["native", "kserve", "ray"])
def test_every_pod_meets_the_restricted_pod_security_standard(runtime: str) -> None:
    m = md(runtime)
    specs = pod_specs(backend_for(Runtime(runtime)).desired(ctx(m)))
    if runtime == "kserve":  # InferenceServices carry the fields in the predictor
        isvc = [o for o in KServeBackend().desired(ctx(m)) if o["kind"] == "InferenceService"]
        for i in isvc:
            assert i["spec"]["predictor"]["securityContext"]["runAsNonRoot"] is True
            sc = i["spec"]["predictor"]["model"]["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert specs
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True


@pytest.mark.parametrize("runtime", ["native", "kserve", "ray"])
def test_objects_never_share_security_contexts(runtime: str) -> None:
    """Editing one built object (as a caller or a later reconcile step may) leaves the next one intact."""

    def contexts() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "securityContext":
                        found.append(value)
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(backend_for(Runtime(runtime)).desired(ctx(md(runtime))))
        return found

    first = contexts()
    assert first
    for sc in first:
        sc.clear()
    assert all(sc.get("runAsNonRoot") is True for sc in contexts())


def test_uri_checks_per_runtime() -> None:
    rel = md(versions=[{"name": "v1", "uri": "models/v1.onnx"}])
    assert uri_problems(rel) == [
        "version v1: uri 'models/v1.onnx' is a relative path, which has no meaning in a pod; use an absolute "
        "path "
        "(image or volume), http(s):// or s3://"
    ]
    assert uri_problems(md()) == []
    local = md(versions=[{"name": "v1", "uri": "file:///m/v1.onnx"}, {"name": "v2", "uri": "s3://b/v2.onnx"}])
    assert NativeBackend().validate(local, Settings()) == []
    assert KServeBackend().validate(local, Settings()) == [
        "version v1: uri 'file:///m/v1.onnx' cannot be a KServe storageUri (use one of s3, gs, http, https, "
        "pvc, "
        "oci, hdfs, webhdfs, hf)"
    ]
    assert RayBackend().validate(rel, Settings())


def test_kserve_objects() -> None:
    c = ctx(md("kserve"), weights={"v1": 70, "v2": 30})
    objects = by_kind(KServeBackend().desired(c))
    isvc = objects[("InferenceService", "m-v1")]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["runtime"] == "ferryman-onnx"
    assert model["storageUri"] == "https://h/v1.onnx" and model["protocolVersion"] == "v2"
    assert model["args"] == ["--model_name=m", "--model_version=v1"]
    assert objects[("InferenceService", "m-v2")]["spec"]["predictor"]["model"]["args"] == [
        "--model_name=m",
        "--model_version=v2",
    ]
    routes = yaml.safe_load(objects[("ConfigMap", "m-routes")]["data"]["routes.json"])
    assert routes["backends"]["v2"] == "http://m-v2-predictor.ns.svc.cluster.local"
    assert ("Deployment", "m-gateway") in objects and ("Deployment", "m-v1") not in objects


def test_kserve_runtime_serves_the_model_under_the_deployment_name() -> None:
    """KServe appends the predictor's args to the ClusterServingRuntime's (``{{.Name}}`` substituted): the
    runtime's own argument parser then sees the ModelDeployment's name and the version, not ``m-v2``."""
    from ferryman_runtimes.kserve.__main__ import parse
    from tests.helpers.helm import REPO_ROOT

    runtime = yaml.safe_load(
        (REPO_ROOT / "runtimes/ferryman_runtimes/kserve/clusterservingruntime.yaml").read_text()
    )
    [container] = runtime["spec"]["containers"]
    isvc = by_kind(KServeBackend().desired(ctx(md("kserve"))))[("InferenceService", "m-v2")]
    args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
    options = parse([*args, *isvc["spec"]["predictor"]["model"]["args"]])
    assert (options.model_name, options.model_version, options.model_dir) == ("m", "v2", "/mnt/models")


def ctx_grpc(m: ModelDeployment) -> Context:
    c = ctx(m)
    return replace(c, settings=replace(c.settings, grpc=True))


def test_no_grpc_port_anywhere_unless_turned_on() -> None:
    for backend, m in ((NativeBackend(), md()), (KServeBackend(), md("kserve"))):
        text = yaml.safe_dump(backend.desired(ctx(m)))
        assert "8081" not in text and "grpc" not in text.lower()


def test_native_servers_and_gateway_serve_grpc_when_on() -> None:
    from ferryman.cli import main as cli

    cli._load_extensions()
    parser = cli.build_parser()  # the args are what `ferryman serve` / `ferryman gateway` accept
    objects = by_kind(NativeBackend().desired(ctx_grpc(md())))
    for name in ("m-v1", "m-v2", "m-gateway"):
        [container] = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert container["args"][-2:] == ["--grpc-port", "8081"]
        assert parser.parse_args(container["args"]).grpc_port == 8081
        assert container["ports"] == [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
        ]
    for name in ("m-v1", "m-v2", "m"):
        ports = objects[("Service", name)]["spec"]["ports"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [
            ("http", 8080, "http"),
            ("grpc", 8081, "grpc"),
        ]
        assert ports[1]["appProtocol"] == "kubernetes.io/h2c"
    routes = yaml.safe_load(objects[("ConfigMap", "m-routes")]["data"]["routes.json"])
    assert routes["grpcBackends"] == {
        "v1": "m-v1.ns.svc.cluster.local:8081",
        "v2": "m-v2.ns.svc.cluster.local:8081",
    }


def test_kserve_predictors_serve_grpc_on_kserves_port_when_on() -> None:
    """The runtime's parser sees --grpc_port; the ports keep 8080 first (KServe maps the first to port 80)."""
    from ferryman_runtimes.kserve.__main__ import parse

    objects = by_kind(KServeBackend().desired(ctx_grpc(md("kserve"))))
    model = objects[("InferenceService", "m-v2")]["spec"]["predictor"]["model"]
    assert parse(["--model_dir=/mnt/models", *model["args"]]).grpc_port == 8081
    assert [p["containerPort"] for p in model["ports"]] == [8080, 8081]
    routes = yaml.safe_load(objects[("ConfigMap", "m-routes")]["data"]["routes.json"])
    assert routes["grpcBackends"]["v2"] == "m-v2-predictor.ns.svc.cluster.local:8081"
    [gateway] = objects[("Deployment", "m-gateway")]["spec"]["template"]["spec"]["containers"]
    assert "--grpc-port" in gateway["args"]


def test_ray_objects() -> None:
    c = ctx(md("ray"), weights={"v1": 70, "v2": 30})
    (rs,) = RayBackend().desired(c)
    assert rs["kind"] == "RayService" and rs["metadata"]["name"] == "m"
    config = yaml.safe_load(rs["spec"]["serveConfigV2"])
    ingress = config["applications"][0]["deployments"][0]
    assert ingress["name"] == "ingress" and ingress["user_config"]["weights"] == {"v1": 70, "v2": 30}
    workers = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 3  # 2 + 1 version replicas
    assert workers["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "2",
        "memory": "1Gi",
    }
    assert RayBackend().endpoint(c.md, "ns") == "http://m-serve-svc.ns.svc.cluster.local:8000"


def test_ray_pods_run_direct_ingress_behind_rays_haproxy() -> None:
    """Throughput mode on every Ray container, with Ray's HAProxy on the Serve port in front of the
    direct-ingress replicas: KubeRay's ``<name>-serve-svc:8000`` is the fast path, no Service over the
    replicas' port range (whose ports Ray assigns per node) is generated."""
    c = ctx(md("ray"))
    objects = RayBackend().desired(c)
    assert [o["kind"] for o in objects] == ["RayService"]
    for pod in pod_specs(objects):
        [container] = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_METRICS_EXPORT_PORT"] == "8080"
        assert {"name": "serve", "containerPort": 8000} in container["ports"]
    config = yaml.safe_load(objects[0]["spec"]["serveConfigV2"])
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}  # where HAProxy listens


def deployment(
    replicas: int, *, available: int, updated: int | None = None, observed: int = 2
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "availableReplicas": available,
            "updatedReplicas": available if updated is None else updated,
        },
    }


@pytest.mark.parametrize(
    ("obj", "ready", "message"),
    [
        (None, False, "v1: Deployment not found"),
        (deployment(2, available=2), True, "v1: 2/2 replicas ready"),
        (deployment(2, available=1), False, "v1: 1/2 replicas ready"),
        (deployment(2, available=2, updated=1), False, "v1: 1/2 replicas ready"),
        (
            deployment(2, available=2, observed=1),
            False,
            "v1: rollout of the new pod template not observed yet",
        ),
        (deployment(0, available=0), False, "v1: scaled to 0 replicas"),
    ],
)
def test_deployment_readiness(obj: dict[str, Any] | None, ready: bool, message: str) -> None:
    assert deployment_ready(obj, what="v1") == (ready, message)


def test_backend_readiness_from_observed_objects() -> None:
    m = md("kserve")
    ok = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    failing = {"status": {"conditions": [{"type": "Ready", "status": "False", "message": "storage failed"}]}}
    r = KServeBackend().readiness(
        m,
        {
            ("InferenceService", "m-v1"): ok,
            ("InferenceService", "m-v2"): failing,
            ("Deployment", "m-gateway"): deployment(1, available=1),
        },
    )
    assert r.version_ready("v1") and not r.version_ready("v2")
    assert r.unready(("v1", "v2")) == ["version v2: InferenceService Ready=False (storage failed)"]
    ray = RayBackend().readiness(md("ray"), {("RayService", "m"): {"status": {"serviceStatus": "Running"}}})
    assert ray.version_ready("v1") and ray.version_ready("v2") and ray.frontend[0]
    missing = NativeBackend().readiness(md(), {})
    assert missing.unready(("v1",)) == ["version v1: Deployment not found", "gateway: Deployment not found"]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("m", "v1"), "m-v1"),
        (("breast-cancer", "gateway"), "breast-cancer-gateway"),
    ],
)
def test_plain_names_stay_readable(parts: tuple[str, ...], expected: str) -> None:
    assert names.dns_name(*parts) == expected


def test_names_are_dns_labels_and_distinct() -> None:
    long = names.version_object("a" * 63, "v" * 40)
    dotted = names.version_object("m", "v1.2")
    dashed = names.version_object("m", "v1-2")
    digit = names.gateway_service("1model")
    for n in (long, dotted, dashed, digit):
        assert (
            len(n) <= 63 and n[0].isalpha() and all(ch.isalnum() or ch == "-" for ch in n) and n == n.lower()
        )
    assert dotted != dashed
    assert names.version_object("m", "gateway") != names.gateway_deployment("m")
    assert names.version_object("m", "v1.2") == dotted  # stable


def test_factory() -> None:
    assert isinstance(backend_for(Runtime.native), NativeBackend)
    assert isinstance(backend_for(Runtime.ray), RayBackend)
    assert isinstance(backend_for(Runtime.kserve), KServeBackend)
    assert {k.kind for k in all_kinds()} == {
        "Deployment",
        "Service",
        "ConfigMap",
        "RayService",
        "InferenceService",
    }


def test_scrape_annotations_on_model_pods() -> None:
    objects = by_kind(NativeBackend().desired(ctx(md())))
    annotations = objects[("Deployment", "m-v1")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations.items() >= workloads.scrape_annotations().items()


def test_native_pods_name_their_program_drain_before_stopping_and_get_the_workload_env() -> None:
    env = (
        {"name": "AWS_ENDPOINT_URL", "value": "http://10.245.0.1:9000"},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
    )
    m = md()
    state, _ = rollout.start(m, now=0.0)
    c = Context(
        md=m,
        namespace="ns",
        owner=OWNER,
        state=state,
        table=rollout.table_for(m, state),
        settings=Settings(image="img:1", identity="t", image_pull_policy="Never", workload_env=env),
    )
    objects = by_kind(NativeBackend().desired(c))
    server = objects[("Deployment", "m-v1")]["spec"]["template"]["spec"]["containers"][0]
    gateway = objects[("Deployment", "m-gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["command"] == server["command"] == ["ferryman"]
    assert gateway["args"][0] == "gateway"
    assert gateway["imagePullPolicy"] == server["imagePullPolicy"] == "Never"
    # kept serving while kube-proxy and the gateways drop the endpoint of a pod being deleted
    assert gateway["lifecycle"] == server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert server["env"][1:] == list(env)
    assert "env" not in gateway or all(e["name"] != "AWS_ENDPOINT_URL" for e in gateway["env"])
