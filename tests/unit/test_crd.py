"""The ModelDeployment CRD generated from the pydantic spec: the committed file is the generated one, and the
schema carries the validation the apiserver enforces (tests/cluster/test_operator_crd.py has the apiserver
accept the CRD and reject invalid resources)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ferryman.crd import crd, crd_yaml
from ferryman.spec import ModelDeploymentSpec
from tests.helpers.servers import run_ferryman

COMMITTED = (
    Path(__file__).resolve().parents[2] / "operators" / "ferryman_operator" / "crd" / "modeldeployments.yaml"
)


def schema() -> dict[str, Any]:
    root: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def spec() -> dict[str, Any]:
    s: dict[str, Any] = schema()["properties"]["spec"]
    return s


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in (node.get("properties") or {}).items():
            out += walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_committed_crd_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == crd_yaml(), "regenerate: ferryman crd -o " + str(COMMITTED)


def test_cli_prints_the_same_crd(tmp_path: Path) -> None:
    out = tmp_path / "crd.yaml"
    proc = run_ferryman(["crd", "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == crd_yaml()
    assert yaml.safe_load(out.read_text()) == crd()


def test_names_short_names_scope_and_status_subresource() -> None:
    doc = crd()
    assert doc["metadata"]["name"] == "modeldeployments.serving.ferryman.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "ModelDeployment",
        "modeldeployments",
        "modeldeployment",
    )
    assert "mdep" in names["shortNames"]
    assert doc["spec"]["scope"] == "Namespaced"
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Traffic", "Stable", "Candidate", "Runtime", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Traffic"]["jsonPath"] == ".status.trafficSplit"
    assert columns["Stable"]["jsonPath"] == ".status.stable"
    assert columns["Candidate"]["jsonPath"] == ".status.candidate"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    assert columns["Runtime"]["priority"] == 1  # only with -o wide


def test_structural_no_refs_no_unions_no_nulls() -> None:
    for path, node in walk(schema()):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert node.get("type") != "null", path
        assert node.get("additionalProperties") is not True, path  # free-form maps preserve unknown fields
        free_form = (
            node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node
        )
        if free_form and path != ".metadata":  # the apiserver itself validates metadata
            assert node.get("x-kubernetes-preserve-unknown-fields") is True, path
        if "default" in node:
            assert node["default"] is not None, path


def test_enums_minimums_patterns_and_required() -> None:
    s = spec()
    assert s["required"] == ["versions"]
    assert s["properties"]["runtime"]["enum"] == ["native", "ray", "kserve"]
    traffic = s["properties"]["traffic"]["properties"]
    assert traffic["strategy"]["enum"] == ["static", "canary", "blueGreen", "abTest", "shadow"]
    versions = s["properties"]["versions"]
    assert (versions["minItems"], versions["maxItems"]) == (1, 10)
    version = versions["items"]
    assert version["required"] == ["name", "uri"]
    assert version["properties"]["replicas"]["minimum"] == 0
    assert version["properties"]["name"]["pattern"] == "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    assert version["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
    budget = s["properties"]["budget"]["properties"]
    assert budget["p99Ms"]["minimum"] == 0 and budget["p99Ms"]["exclusiveMinimum"] is True
    assert (budget["maxErrorRate"]["minimum"], budget["maxErrorRate"]["maximum"]) == (0, 1)
    weights = traffic["abTest"]["properties"]["weights"]
    assert weights["additionalProperties"]["maximum"] == 100


def test_defaults_mirror_the_pydantic_defaults() -> None:
    s = spec()["properties"]
    defaults = ModelDeploymentSpec.model_validate({"versions": [{"name": "v1", "uri": "u"}]})
    assert s["runtime"]["default"] == defaults.runtime.value
    assert s["traffic"]["default"] == {} and s["budget"]["default"] == {}
    traffic = s["traffic"]["properties"]
    assert traffic["strategy"]["default"] == "static"
    assert traffic["canary"]["properties"]["steps"]["default"] == defaults.traffic.canary.steps
    assert (
        traffic["canary"]["properties"]["intervalSeconds"]["default"]
        == defaults.traffic.canary.interval_seconds
    )
    assert s["budget"]["properties"]["p99Ms"]["default"] == defaults.budget.p99_ms
    assert s["versions"]["items"]["properties"]["replicas"]["default"] == 1
    assert "default" not in traffic["stable"]  # computed (the first version), so no static default
    assert "default" not in traffic["shadow"]  # optional section


def test_cross_field_rules_in_cel() -> None:
    s = spec()
    messages = {r["message"] for r in s["x-kubernetes-validations"]}
    messages |= {r["message"] for r in s["properties"]["traffic"]["x-kubernetes-validations"]}
    steps = s["properties"]["traffic"]["properties"]["canary"]["properties"]["steps"]
    messages |= {r["message"] for r in steps["x-kubernetes-validations"]}
    assert messages >= {
        "version names must be unique",
        "traffic.stable must name one of spec.versions",
        "traffic.candidate must name one of spec.versions",
        "traffic.abTest.weights must name versions of spec.versions",
        "traffic.abTest.weights must sum to 100",
        "traffic.candidate must differ from traffic.stable",
        "traffic.candidate is required for canary, blueGreen and shadow strategies",
        "traffic.abTest.weights is required for the abTest strategy",
        "every step must be a percentage in 1..100",
        "the last step must be 100 (full promotion)",
        "steps must strictly increase",
    }
    root_rules = schema()["x-kubernetes-validations"]
    assert "self.metadata.name" in root_rules[0]["rule"]


def test_status_keeps_the_rollout_state_and_keys_conditions_by_type() -> None:
    status = schema()["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert status["properties"]["rollout"]["x-kubernetes-preserve-unknown-fields"] is True
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert not [p for p, n in walk(status) if "default" in n]
