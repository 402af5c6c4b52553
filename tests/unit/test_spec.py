"""ModelDeployment spec: YAML loading, defaults, and validation errors that name the field path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman.errors import SpecError
from ferryman.spec import ModelDeployment, Strategy, load_deployment, parse_deployment

SHA = "a" * 64


def base() -> dict[str, Any]:
    return {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "versions": [{"name": "v1", "uri": "models/v1.onnx"}, {"name": "v2", "uri": "s3://b/v2.onnx"}]
        },
    }


def errors_of(mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    doc = base()
    mutate(doc)
    with pytest.raises(SpecError) as info:
        parse_deployment(doc, source="test.yaml")
    first, *lines = str(info.value).splitlines()
    assert first == "test.yaml: invalid ModelDeployment"
    return lines


def test_loads_yaml_and_resolves_relative_uris_against_the_file(tmp_path: Path) -> None:
    doc = base()
    doc["spec"]["versions"][0]["referenceData"] = "ref/v1.npy"
    doc["spec"]["versions"][1]["uri"] = "/abs/v2.onnx"
    spec_dir = tmp_path / "deploy"
    spec_dir.mkdir()
    path = spec_dir / "md.yaml"
    path.write_text(yaml.safe_dump(doc))

    md = load_deployment(path)

    assert md.name == "iris"
    assert md.spec.versions[0].uri == str(spec_dir / "models" / "v1.onnx")
    assert md.spec.versions[0].reference_data == str(spec_dir / "ref" / "v1.npy")
    assert md.spec.versions[1].uri == "/abs/v2.onnx"


def test_remote_uris_are_left_alone(tmp_path: Path) -> None:
    doc = base()
    doc["spec"]["versions"][0]["uri"] = "https://example.com/m.onnx"
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    md = load_deployment(path)
    assert md.spec.versions[0].uri == "https://example.com/m.onnx"
    assert md.spec.versions[1].uri == "s3://b/v2.onnx"


def test_defaults() -> None:
    md = parse_deployment(base())
    s = md.spec
    assert s.runtime.value == "native"
    assert s.budget.p99_ms == 100
    assert s.budget.max_error_rate == 0.01
    assert s.traffic.strategy is Strategy.static
    assert s.traffic.stable == "v1"  # the first version when not given
    assert s.traffic.candidate is None
    assert s.traffic.canary.steps == [5, 25, 50, 100]
    assert s.traffic.pin_header == "x-ferryman-version"
    assert s.versions[0].replicas == 1
    assert s.versions[0].sha256 is None
    assert s.limits.max_body_bytes == 16 * 1024 * 1024
    assert s.threads == 1


def test_camel_case_wire_names_round_trip() -> None:
    doc = base()
    doc["spec"]["budget"] = {"p99Ms": 250, "maxErrorRate": 0.05}
    doc["spec"]["traffic"] = {
        "strategy": "canary",
        "candidate": "v2",
        "canary": {"steps": [10, 100], "intervalSeconds": 3, "minRequests": 7},
    }
    md = parse_deployment(doc)
    assert md.spec.budget.p99_ms == 250
    assert md.spec.traffic.canary.interval_seconds == 3
    out = md.to_dict()
    assert out["spec"]["budget"] == {"p99Ms": 250.0, "maxErrorRate": 0.05}
    assert out["spec"]["traffic"]["canary"]["minRequests"] == 7
    assert ModelDeployment.model_validate(out) == md


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: d["spec"]["versions"][1].update(sha256="xyz"),
            "spec.versions[1].sha256: ",
            id="bad-sha256",
        ),
        pytest.param(lambda d: d["spec"].update(foo=1), "spec.foo: unknown field", id="unknown-spec-field"),
        pytest.param(lambda d: d.update(extra=1), "extra: unknown field", id="unknown-top-field"),
        pytest.param(
            lambda d: d["spec"]["versions"][0].update(url="x"),
            "spec.versions[0].url: unknown field",
            id="unknown-version-field",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"canary": {"intervalSecond": 3}}),
            "spec.traffic.canary.intervalSecond: unknown field",
            id="typo-nested",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v2": 40}}}
            ),
            "spec.traffic.abTest.weights: weights must sum to 100",
            id="weights-sum",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "abTest", "abTest": {"weights": {"v1": 50, "v3": 50}}}
            ),
            "spec.traffic.abTest.weights: unknown version 'v3'",
            id="weights-unknown-version",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "abTest"}),
            "spec.traffic.abTest.weights: required for strategy 'abTest'",
            id="weights-required",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "canary", "candidate": "v3"}),
            "spec.traffic.candidate: unknown version 'v3' (known: v1, v2)",
            id="unknown-candidate",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"stable": "v9"}),
            "spec.traffic.stable: unknown version 'v9'",
            id="unknown-stable",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "canary"}),
            "spec.traffic.candidate: required for strategy 'canary'",
            id="canary-needs-candidate",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "shadow"}),
            "spec.traffic.candidate: required for strategy 'shadow'",
            id="shadow-needs-candidate",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "blueGreen", "candidate": "v1"}),
            "spec.traffic.candidate: must differ from traffic.stable",
            id="candidate-is-stable",
        ),
        pytest.param(
            lambda d: d["spec"]["versions"][1].update(name="v1"),
            "spec.versions: duplicate version names: v1",
            id="duplicate-versions",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "canary", "candidate": "v2", "canary": {"steps": [10, 5, 100]}}
            ),
            "spec.traffic.canary.steps: steps must strictly increase",
            id="steps-increase",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "canary", "candidate": "v2", "canary": {"steps": [10, 10, 100]}}
            ),
            "spec.traffic.canary.steps: steps must strictly increase",
            id="steps-repeat",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "canary", "candidate": "v2", "canary": {"steps": [10, 50]}}
            ),
            "spec.traffic.canary.steps: the last step must be 100",
            id="steps-end-at-100",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "canary", "candidate": "v2", "canary": {"steps": [0, 100]}}
            ),
            "spec.traffic.canary.steps: every step must be a percentage in 1..100",
            id="steps-zero",
        ),
        pytest.param(
            lambda d: d["spec"].update(
                traffic={"strategy": "canary", "candidate": "v2", "canary": {"steps": [50, 150]}}
            ),
            "spec.traffic.canary.steps: every step must be a percentage in 1..100",
            id="steps-over-100",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"canary": {"steps": []}}),
            "spec.traffic.canary.steps: ",
            id="steps-empty",
        ),
        pytest.param(
            lambda d: d["spec"].update(traffic={"strategy": "bogus"}),
            "spec.traffic.strategy: ",
            id="unknown-strategy",
        ),
        pytest.param(lambda d: d["spec"].update(versions=[]), "spec.versions: ", id="no-versions"),
        pytest.param(
            lambda d: d["spec"]["versions"][0].pop("uri"),
            "spec.versions[0].uri: Field required",
            id="missing-uri",
        ),
        pytest.param(
            lambda d: d["spec"]["versions"][0].update(name="V_1"),
            "spec.versions[0].name: ",
            id="bad-version-name",
        ),
        pytest.param(lambda d: d["metadata"].update(name="Bad_Name"), "metadata.name: ", id="bad-name"),
        pytest.param(lambda d: d.update(kind="Deployment"), "kind: ", id="wrong-kind"),
        pytest.param(
            lambda d: d["spec"].update(budget={"p99Ms": -1}),
            "spec.budget.p99Ms: Input should be greater than 0",
            id="negative-budget",
        ),
        pytest.param(
            lambda d: d["spec"].update(budget={"maxErrorRate": 2}),
            "spec.budget.maxErrorRate: ",
            id="error-rate-over-1",
        ),
        pytest.param(
            lambda d: d["spec"].update(limits={"maxBodyBytes": 10}),
            "spec.limits.maxBodyBytes: ",
            id="tiny-body-limit",
        ),
        pytest.param(
            lambda d: d["spec"]["versions"][0].update(resources={"cpu": "lots"}),
            "spec.versions[0].resources.cpu: ",
            id="bad-quantity",
        ),
        pytest.param(
            lambda d: d["spec"]["versions"][0].update(replicas=-1),
            "spec.versions[0].replicas: ",
            id="negative-replicas",
        ),
        pytest.param(
            lambda d: d["spec"].update(runtime="tensorflow"), "spec.runtime: ", id="unknown-runtime"
        ),
        pytest.param(
            lambda d: d["spec"].update(drift={"windowsPerSecond": 0}),
            "spec.drift.windowsPerSecond: Input should be greater than 0",
            id="drift-rate-zero",
        ),
        pytest.param(
            lambda d: d["spec"].update(drift={"minIntervalSeconds": -1}),
            "spec.drift.minIntervalSeconds: ",
            id="drift-interval-negative",
        ),
    ],
)
def test_validation_errors_name_the_field_path(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    lines = errors_of(mutate)
    assert any(line.startswith(expected) for line in lines), lines


def test_every_error_is_reported_at_once() -> None:
    def two_problems(d: dict[str, Any]) -> None:
        d["spec"]["foo"] = 1
        d["spec"]["versions"][0]["sha256"] = "nope"

    lines = errors_of(two_problems)
    assert {line.split(":")[0] for line in lines} == {"spec.foo", "spec.versions[0].sha256"}


def test_valid_strategies() -> None:
    doc = base()
    doc["spec"]["versions"][0]["sha256"] = SHA
    doc["spec"]["traffic"] = {
        "strategy": "abTest",
        "abTest": {"weights": {"v1": 70, "v2": 30}, "sticky": {"source": "cookie", "name": "uid"}},
    }
    md = parse_deployment(doc)
    assert md.spec.traffic.ab_test.weights == {"v1": 70, "v2": 30}
    assert md.spec.traffic.ab_test.sticky.source.value == "cookie"
    assert md.spec.versions[0].sha256 == SHA

    doc = base()
    doc["spec"]["traffic"] = {"strategy": "blueGreen", "stable": "v2", "candidate": "v1"}
    md = parse_deployment(doc)
    assert (md.spec.traffic.stable, md.spec.traffic.candidate) == ("v2", "v1")


def test_version_lookup() -> None:
    md = parse_deployment(base())
    assert md.spec.version("v2").uri == "s3://b/v2.onnx"
    with pytest.raises(KeyError):
        md.spec.version("v3")


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_non_mapping_documents_are_rejected(data: Any) -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_deployment(data, source="x.yaml")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_deployment(bad)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_deployment(tmp_path / "absent.yaml")


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    doc = copy.deepcopy(base())
    doc["spec"]["traffic"] = {"strategy": "canary"}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as info:
        load_deployment(path)
    assert str(info.value).startswith(f"{path}: invalid ModelDeployment")
    assert info.value.status == 422
