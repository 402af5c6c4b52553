"""The generated ModelDeployment CRD on the real apiserver: accepted (structural, CEL within cost limits),
defaults applied, printer columns, and invalid resources rejected with a message that says what is wrong.

Unknown fields: the structural schema prunes them, and clients decide what happens first — ``kubectl``
(``--validate=strict``, the default) and server-side apply reject them naming the field; a client that
asks for ``fieldValidation=Ignore`` (``--validate=false``) gets the resource stored without the field.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import CRD_NAME

pytestmark = pytest.mark.cluster

BASE: dict[str, Any] = {
    "apiVersion": "serving.ferryman.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "ok"},
    "spec": {
        "versions": [
            {"name": "v1", "uri": "https://models.example/v1.onnx"},
            {"name": "v2", "uri": "https://models.example/v2.onnx"},
        ]
    },
}


@pytest.fixture(scope="module")
def namespace(crd: ControlPlane) -> Iterator[str]:
    """One namespace for the whole module (nothing here runs pods; every test uses its own names)."""
    name = f"t-crd-{uuid.uuid4().hex[:8]}"
    crd.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        crd.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return doc


def create(cp: ControlPlane, namespace: str, doc: dict[str, Any], *extra: str) -> Any:
    return cp.kubectl("-n", namespace, "create", *extra, "-f", "-", input=json.dumps(doc), check=False)


def test_crd_established_with_status_subresource(crd: ControlPlane) -> None:
    obj = crd.get_json("crd", CRD_NAME)
    conds = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
    version = obj["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert "mdep" in obj["spec"]["names"]["shortNames"]


def test_valid_resource_defaulted_and_listed_with_printer_columns(crd: ControlPlane, namespace: str) -> None:
    assert create(crd, namespace, manifest("sample")).returncode == 0
    stored = crd.get_json("-n", namespace, "mdep", "sample")  # the short name works
    spec = stored["spec"]
    assert spec["runtime"] == "native"
    assert spec["traffic"]["strategy"] == "static"
    assert spec["traffic"]["canary"]["steps"] == [5, 25, 50, 100]
    assert spec["budget"] == {"p99Ms": 100, "maxErrorRate": 0.01}
    assert spec["versions"][0]["replicas"] == 1
    assert spec["versions"][0]["resources"] == {"cpu": "1", "memory": "512Mi"}
    header = crd.kubectl("-n", namespace, "get", "modeldeployments").stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "TRAFFIC", "STABLE", "CANDIDATE", "AGE"]
    wide = crd.kubectl("-n", namespace, "get", "mdep", "-o", "wide").stdout.splitlines()[0].split()
    assert "RUNTIME" in wide


INVALID = [
    pytest.param(
        {"traffic": {"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v2": 40}}}},
        "traffic.abTest.weights must sum to 100",
        id="weights-not-100",
    ),
    pytest.param({"traffic": {"strategy": "linear"}}, 'Unsupported value: "linear"', id="unknown-strategy"),
    pytest.param(
        {"versions": [{"name": "v1", "uri": "u", "replicas": -1}]},
        "spec.versions[0].replicas",
        id="negative-replicas",
    ),
    pytest.param({"versions": []}, "spec.versions", id="empty-versions"),
    pytest.param(
        {"versions": [{"name": "v1", "uri": "u"}, {"name": "v1", "uri": "u"}]},
        "version names must be unique",
        id="duplicate-versions",
    ),
    pytest.param(
        {"traffic": {"strategy": "canary"}}, "traffic.candidate is required", id="canary-without-candidate"
    ),
    pytest.param(
        {"traffic": {"strategy": "canary", "candidate": "v2", "canary": {"steps": [50, 25, 100]}}},
        "steps must strictly increase",
        id="steps-decrease",
    ),
    pytest.param(
        {"traffic": {"strategy": "canary", "candidate": "v2", "canary": {"steps": [5, 50]}}},
        "the last step must be 100",
        id="steps-not-ending-at-100",
    ),
    pytest.param(
        {"traffic": {"stable": "v9"}}, "traffic.stable must name one of spec.versions", id="unknown-stable"
    ),
    pytest.param(
        {"traffic": {"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v9": 50}}}},
        "traffic.abTest.weights must name versions",
        id="unknown-arm",
    ),
    pytest.param({"budget": {"p99Ms": 0}}, "spec.budget.p99Ms", id="zero-budget"),
    pytest.param({"versions": [{"name": "V1!", "uri": "u"}]}, "spec.versions[0].name", id="bad-version-name"),
    pytest.param(
        {"versions": [{"name": "v1", "uri": "u", "resources": {"cpu": "lots"}}]},
        "spec.versions[0].resources.cpu",
        id="bad-quantity",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_resource_rejected_with_clear_message(
    crd: ControlPlane, namespace: str, spec: dict[str, Any], message: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    proc = create(crd, namespace, manifest(name, **spec))
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert crd.kubectl("-n", namespace, "get", "mdep", name, check=False).returncode != 0


def test_missing_versions_rejected(crd: ControlPlane, namespace: str) -> None:
    doc = manifest("noversions")
    del doc["spec"]["versions"]
    proc = create(crd, namespace, doc)
    assert proc.returncode != 0
    assert "spec.versions: Required value" in proc.stderr


def test_name_must_be_a_dns_label(crd: ControlPlane, namespace: str) -> None:
    proc = create(crd, namespace, manifest("my.model"))
    assert proc.returncode != 0
    assert "metadata.name must be a DNS label" in proc.stderr


def test_unknown_field_rejected_by_strict_validation_and_pruned_otherwise(
    crd: ControlPlane, namespace: str
) -> None:
    doc = manifest("typo")
    doc["spec"]["versions"][0]["replicaz"] = 3
    strict = create(crd, namespace, doc)  # kubectl's default is --validate=strict
    assert strict.returncode != 0
    assert 'unknown field "spec.versions[0].replicaz"' in strict.stderr
    applied = crd.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(doc), check=False
    )
    assert applied.returncode != 0 and "replicaz" in applied.stderr
    lenient = create(crd, namespace, doc, "--validate=false")
    assert lenient.returncode == 0, lenient.stderr
    stored = crd.get_json("-n", namespace, "mdep", "typo")
    assert "replicaz" not in stored["spec"]["versions"][0]
    assert stored["spec"]["versions"][0]["replicas"] == 1
