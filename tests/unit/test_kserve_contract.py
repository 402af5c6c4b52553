"""The KServe contract without a cluster: generated manifests against the upstream CRD schemas, the committed
ClusterServingRuntime, the runtime's arguments as KServe assembles them, and model-directory layouts.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman.errors import ModelStoreError
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman_runtimes.kserve import manifests
from ferryman_runtimes.kserve.__main__ import parse
from ferryman_runtimes.kserve.server import find_model_file

UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "crds" / "upstream"


@functools.cache
def crd_schema(filename: str, version: str) -> dict[str, Any]:
    doc = yaml.safe_load((UPSTREAM / filename).read_text())
    for v in doc["spec"]["versions"]:
        if v["name"] == version:
            schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"{filename} has no version {version}")


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the apiserver would prune (not declared in the structural schema)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            sub = schema["properties"].get(key)
            if sub is None:
                found.append(f"{path}.{key}")
            else:
                found.extend(unknown_fields(value, sub, f"{path}.{key}"))
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            found.extend(unknown_fields(value, schema["additionalProperties"], f"{path}.{key}"))
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found.extend(unknown_fields(item, schema["items"], f"{path}[{i}]"))
    return found


def assert_valid(obj: dict[str, Any], filename: str, version: str) -> None:
    import jsonschema

    schema = crd_schema(filename, version)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert unknown_fields(obj, schema) == []


@pytest.fixture(scope="module")
def md(sample_models) -> ModelDeployment:
    doc = yaml.safe_load(Path(sample_models.spec).read_text())
    doc["metadata"]["namespace"] = "models"
    for v in doc["spec"]["versions"]:
        v["uri"] = f"s3://models/breast-cancer/{v['name']}/model.onnx"
    doc["spec"]["versions"][1]["replicas"] = 3
    doc["spec"]["versions"][1]["resources"] = {"cpu": "500m", "memory": "256Mi"}
    return parse_deployment(doc)


# -- the ClusterServingRuntime ----------------------------------------------------------------------
def test_committed_cluster_serving_runtime_is_the_generated_one() -> None:
    assert manifests.RUNTIME_FILE.read_text() == manifests.cluster_serving_runtime_yaml()


def test_cluster_serving_runtime_matches_the_upstream_crd() -> None:
    assert_valid(manifests.cluster_serving_runtime(), "serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1")


def test_the_unknown_field_check_catches_a_typo() -> None:
    runtime = manifests.cluster_serving_runtime()
    runtime["spec"]["containers"][0]["readinessProbes"] = {}
    schema = crd_schema("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1")
    assert unknown_fields(runtime, schema) == [".spec.containers[0].readinessProbes"]


def test_cluster_serving_runtime_contract() -> None:
    rt = manifests.cluster_serving_runtime(image="registry.example/ferryman-runtime:1.2.3")
    assert rt["metadata"]["name"] == "ferryman-onnx"
    spec = rt["spec"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["onnx"]
    assert spec["protocolVersions"] == ["v1", "v2"]
    [c] = spec["containers"]
    assert c["name"] == "kserve-container"  # the container KServe merges the predictor into
    assert c["image"] == "registry.example/ferryman-runtime:1.2.3"
    assert c["command"] == ["python", "-m", "ferryman_runtimes.kserve"]
    assert c["args"] == ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert set(c["resources"]) == {"requests", "limits"}


def test_security_context_is_restricted_compliant() -> None:
    sc = manifests.cluster_serving_runtime()["spec"]["containers"][0]["securityContext"]
    # Pod Security Standards, "restricted" profile
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert sc.get("privileged", False) is False
    assert sc["runAsUser"] != 0


# -- InferenceServices ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_inference_service_matches_the_upstream_crd(md: ModelDeployment, version: str) -> None:
    assert_valid(manifests.inference_service(md, version), "serving.kserve.io_inferenceservices.yaml", "v1beta1")


def test_inference_service_uses_the_runtime_and_the_version(md: ModelDeployment) -> None:
    isvc = manifests.inference_service(md, "v2")
    assert isvc["metadata"]["name"] == "breast-cancer-v2"
    assert isvc["metadata"]["namespace"] == "models"
    assert isvc["metadata"]["labels"]["serving.ferryman.dev/version"] == "v2"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (3, 3)
    model = predictor["model"]
    assert model["runtime"] == "ferryman-onnx"
    assert model["modelFormat"] == {"name": "onnx"}
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://models/breast-cancer/v2/model.onnx"
    assert model["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}


def test_inference_service_rejects_unknown_versions_and_protocols(md: ModelDeployment) -> None:
    with pytest.raises(KeyError):
        manifests.inference_service(md, "v9")
    with pytest.raises(ValueError, match="protocol"):
        manifests.inference_service(md, "v1", protocol="v3")


def test_runtime_arguments_as_kserve_assembles_them(md: ModelDeployment) -> None:
    """KServe substitutes {{.Name}} and appends the predictor's args to the runtime's; the last one wins."""
    isvc = manifests.inference_service(md, "v2")
    [container] = manifests.cluster_serving_runtime()["spec"]["containers"]
    runtime_args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
    options = parse(runtime_args + isvc["spec"]["predictor"]["model"]["args"])
    assert options.model_name == "breast-cancer"  # the ModelDeployment's name, not the InferenceService's
    assert options.model_version == "v2"
    assert options.model_dir == "/mnt/models"
    assert options.http_port == 8080
    plain = parse(runtime_args)
    assert plain.model_name == "breast-cancer-v2"


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


@pytest.mark.parametrize(("files", "message"), [
    ([], "no .onnx model file"),
    (["x.onnx", "y.onnx"], "several ONNX files"),
    (["weights.bin"], "weights.bin"),
])
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
