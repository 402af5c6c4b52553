"""The Ray runtime's side of ``ferryman.serve_config`` (what ``ferryman up --runtime ray`` deploys and the
operator writes into KubeRay's ``serveConfigV2``), and batching.

No Ray instance here: the config is checked against Ray Serve's own schema, the application builder is
called without deploying it, and batching runs real ONNX Runtime sessions in-process. The config's pure
mapping (replicas, resources, quantities, rollout steps) is covered by ``test_serve_config.py``.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ferryman import serve_config as config
from ferryman.engine import OnnxModel
from ferryman.errors import InvalidInput
from ferryman.rollout import promote, start
from ferryman.routing import RoutingInputs, decide
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman_runtimes.ray.batching import Job, run_batch
from tests.helpers.models import reference_outputs


def _md(sample_models, **spec: Any) -> ModelDeployment:
    doc = yaml.safe_load(Path(sample_models.spec).read_text())
    for v in doc["spec"]["versions"]:
        v["uri"] = str(Path(sample_models.directory) / v["uri"])
    doc["spec"].update(spec)
    return parse_deployment(doc)


def _deployments(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in cfg["applications"][0]["deployments"]}


def test_config_is_a_valid_ray_serve_deploy_config(sample_models) -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = config.serve_config(_md(sample_models))
    schema = ServeDeploySchema.model_validate(cfg)
    app = schema.applications[0]
    assert app.name == "breast-cancer"
    assert app.import_path == config.IMPORT_PATH
    assert app.route_prefix == "/"
    assert sorted(d.name for d in app.deployments) == ["ingress", "version-v1", "version-v2"]


def test_builder_creates_exactly_the_deployments_the_config_names(sample_models) -> None:
    from ferryman_runtimes.ray.app import build

    cfg = config.serve_config(_md(sample_models), dispatch={"v2": "remote"})
    app_cfg = cfg["applications"][0]
    app = build(copy.deepcopy(app_cfg["args"]))
    ingress = app._bound_deployment
    init_args: tuple[Any, ...] = ingress.init_args
    remotes = init_args[1]
    names = {ingress.name} | {r._bound_deployment.name for r in remotes.values()}
    assert names == set(_deployments(cfg))
    assert init_args[3] == {"v2": "remote"}
    # each version deployment loads its own model from the spec: only the spec dict crosses processes
    for version, r in remotes.items():
        assert r._bound_deployment.init_args == (app_cfg["args"]["deployment"], version)


def test_builder_rejects_an_invalid_spec(sample_models) -> None:
    from ferryman.errors import SpecError
    from ferryman_runtimes.ray.app import build

    args = config.serve_config(_md(sample_models))["applications"][0]["args"]
    args["deployment"]["spec"]["versions"][0]["replicas"] = -1
    with pytest.raises(SpecError, match="replicas"):
        build(args)


def test_replicas_batching_and_limits_come_from_the_spec(sample_models) -> None:
    md = _md(sample_models, batching={"maxBatchSize": 16, "maxDelayMs": 5}, limits={"maxInFlight": 300})
    md.spec.versions[0].replicas = 3
    md.spec.versions[1].replicas = 0
    deps = _deployments(config.serve_config(md))
    assert deps["version-v1"]["num_replicas"] == 3
    assert "num_replicas" not in deps["version-v2"]
    assert deps["version-v2"]["autoscaling_config"]["min_replicas"] == 0  # scale to zero
    for name in ("version-v1", "version-v2"):
        assert deps[name]["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.005}
    assert deps["ingress"]["max_ongoing_requests"] == 300
    assert deps["ingress"]["num_replicas"] == 3


def test_resources_from_the_spec_on_a_cluster_and_scaled_to_fit_locally(sample_models) -> None:
    md = _md(sample_models)
    md.spec.versions[0].resources.cpu = "1500m"
    md.spec.versions[0].resources.memory = "1Gi"
    deps = _deployments(config.serve_config(md))
    assert deps["version-v1"]["ray_actor_options"] == {"num_cpus": 1.5, "memory": 2**30}
    assert deps["ingress"]["ray_actor_options"]["num_cpus"] == 1.5
    local = _deployments(config.serve_config(md, cpus=2))
    total = sum(d["ray_actor_options"]["num_cpus"] for d in local.values())
    assert 1.9 < total <= 2.0
    assert all("memory" not in d["ray_actor_options"] for d in local.values())


def test_unknown_dispatch_version_or_mode_is_rejected(sample_models) -> None:
    md = _md(sample_models)
    with pytest.raises(ValueError, match="dispatch"):
        config.serve_config(md, dispatch={"v9": "remote"})
    with pytest.raises(ValueError, match="dispatch"):
        config.serve_config(md, dispatch={"v1": "sideways"})


def test_ingress_user_config_is_the_rollout_split(sample_models) -> None:
    md = _md(sample_models)  # canary v1 -> v2, steps 5/25/50/100
    state = start(md, now=0.0)[0]
    cfg = config.route_config(md, state)
    assert cfg["weights"] == {"v1": 95, "v2": 5}
    assert _deployments(config.serve_config(md, state=state))["ingress"]["user_config"] == cfg
    table = config.table_from_route_config(md, cfg)
    assert table.weight_map == {"v1": 95, "v2": 5}
    assert decide(table, RoutingInputs(), draw=0.97).version == "v2"
    assert decide(table, RoutingInputs(), draw=0.5).version == "v1"
    assert decide(table, RoutingInputs(headers={"x-ferryman-version": "v2"}), draw=0.0).route == "pinned"
    promoted = promote(state, now=1.0)[0]
    table = config.table_from_route_config(md, config.route_config(md, promoted))
    assert table.weight_map == {"v2": 100}
    assert table.candidate is None


def test_ab_and_shadow_settings_survive_the_round_trip(sample_models) -> None:
    md = _md(
        sample_models,
        traffic={
            "strategy": "abTest",
            "stable": "v1",
            "candidate": "v2",
            "abTest": {"weights": {"v1": 60, "v2": 40}, "sticky": {"source": "header", "name": "x-user"}},
            "shadow": {"percent": 25},
        },
    )
    table = config.table_from_route_config(md, config.route_config(md))
    assert table.weight_map == {"v1": 60, "v2": 40}
    assert table.sticky is not None and table.sticky.name == "x-user"
    assert table.shadow == "v2" and table.shadow_percent == 25
    key = RoutingInputs(headers={"x-user": "alice"})
    assert len({decide(table, key, draw=d).version for d in (0.0, 0.5, 0.99)}) == 1  # sticky


def test_bad_user_config_is_a_clear_error(sample_models) -> None:
    with pytest.raises(ValueError, match="user_config"):
        config.table_from_route_config(_md(sample_models), {"weights": {"v1": 100}})


# -- batching ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gbt(sample_models) -> OnnxModel:
    return OnnxModel.load(sample_models.versions["v1"], name="breast-cancer", version="v1")


def test_stacked_batch_equals_one_run_per_request(gbt: OnnxModel, sample_models, traffic: np.ndarray) -> None:
    sizes = [1, 3, 1, 5, 2]
    starts = np.cumsum([0, *sizes])
    jobs = [Job({"input": traffic[a:b]}) for a, b in itertools.pairwise(starts)]
    results = run_batch(gbt, jobs)
    for job, result in zip(jobs, results, strict=True):
        assert isinstance(result, dict)
        expected = reference_outputs(sample_models.versions["v1"], job.feed)
        assert result["label"].shape[0] == job.rows
        np.testing.assert_array_equal(result["label"], expected["label"])
        np.testing.assert_allclose(result["probabilities"], expected["probabilities"], rtol=1e-6)


def test_requested_outputs_are_grouped_separately(gbt: OnnxModel, traffic: np.ndarray) -> None:
    results = run_batch(
        gbt,
        [
            Job({"input": traffic[:2]}, ["label"]),
            Job({"input": traffic[2:4]}),
            Job({"input": traffic[4:5]}, ["label"]),
        ],
    )
    assert [sorted(r) for r in results if isinstance(r, dict)] == [
        ["label"],
        ["label", "probabilities"],
        ["label"],
    ]


def test_one_bad_request_does_not_fail_its_batch(gbt: OnnxModel, traffic: np.ndarray) -> None:
    bad = Job({"input": np.zeros((1, 30), dtype=np.float64)})  # wrong dtype: the model rejects it
    results = run_batch(gbt, [Job({"input": traffic[:2]}), bad, Job({"input": traffic[2:3]})])
    assert isinstance(results[0], dict) and results[0]["label"].shape == (2,)
    assert isinstance(results[1], InvalidInput)
    assert isinstance(results[2], dict) and results[2]["label"].shape == (1,)
