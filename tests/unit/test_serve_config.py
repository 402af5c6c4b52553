"""The Ray Serve config in the core (ferryman.serve_config) as the operator uses it for RayServices: what a
rollout step changes in it (only the ingress user_config), replicas and resources."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ferryman import rollout, serve_config
from ferryman.spec import ModelDeployment


def md(**spec: Any) -> ModelDeployment:
    doc: dict[str, Any] = {
        "versions": [
            {
                "name": "v1",
                "uri": "s3://b/v1.onnx",
                "replicas": 2,
                "resources": {"cpu": "500m", "memory": "1Gi"},
            },
            {"name": "v2", "uri": "s3://b/v2.onnx", "replicas": 0},
        ],
        "traffic": {"strategy": "canary", "candidate": "v2"},
    }
    doc.update(spec)
    return ModelDeployment.model_validate({"metadata": {"name": "m"}, "spec": doc})


def states(m: ModelDeployment) -> list[rollout.RolloutState]:
    first, _ = rollout.start(m, now=0.0)
    promoted, _ = rollout.promote(first, now=1.0)
    return [first, promoted]


def test_rollout_step_changes_only_the_ingress_user_config() -> None:
    m = md()
    first, promoted = states(m)
    a = serve_config.serve_config(m, state=first)
    b = serve_config.serve_config(m, state=promoted)
    da, db = a["applications"][0]["deployments"], b["applications"][0]["deployments"]
    assert da[0]["name"] == serve_config.INGRESS
    assert da[0]["user_config"] == {
        "strategy": "canary",
        "phase": "Progressing",
        "stable": "v1",
        "candidate": "v2",
        "weights": {"v1": 95, "v2": 5},
    }
    assert db[0]["user_config"]["weights"] == {"v2": 100}
    assert da[1:] == db[1:] and a["applications"][0]["args"] == b["applications"][0]["args"]
    assert serve_config.table_from_route_config(m, da[0]["user_config"]).weights == (("v1", 95), ("v2", 5))


def test_versions_replicas_and_resources() -> None:
    m = md()
    app = serve_config.serve_config(m, state=states(m)[0])["applications"][0]
    assert app["import_path"] == serve_config.IMPORT_PATH
    assert app["args"]["deployment"]["metadata"]["name"] == "m" and "status" not in app["args"]["deployment"]
    deployments = {d["name"]: d for d in app["deployments"]}
    v1 = deployments[serve_config.version_deployment("v1")]
    assert v1["num_replicas"] == 2 and v1["ray_actor_options"] == {"num_cpus": 0.5, "memory": 1024**3}
    assert deployments[serve_config.version_deployment("v2")]["autoscaling_config"]["min_replicas"] == 0
    text = serve_config.serve_config_yaml(m, state=states(m)[0])
    assert yaml.safe_load(text) == serve_config.serve_config(m, state=states(m)[0])


@pytest.mark.parametrize(("text", "cpus"), [("2", 2.0), ("250m", 0.25), ("1.5", 1.5)])
def test_parse_cpu(text: str, cpus: float) -> None:
    assert serve_config.parse_cpu(text) == cpus


def test_parse_memory() -> None:
    assert serve_config.parse_memory("512Mi") == 512 * 2**20
    with pytest.raises(ValueError, match="not a memory quantity"):
        serve_config.parse_memory("lots")
