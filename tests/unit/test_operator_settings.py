"""Operator settings from FERRYMAN_* variables and flags (what the Helm chart sets)."""

from __future__ import annotations

import pytest

from ferryman_operator.settings import ENV, build_parser, from_env


def test_defaults() -> None:
    s = from_env({})
    assert s.clusterwide and s.namespaces == ()
    assert s.prometheus_url == "" and s.prometheus_namespace_label == "namespace"
    assert s.resync_seconds == 600.0 and s.workers == 16
    assert s.leader_election and s.lease_name == "ferryman-operator" and s.lease_seconds == 15.0
    assert s.health_address == "0.0.0.0:8081" and s.preflight and s.kserve_runtime == "ferryman-onnx"
    assert not s.grpc and from_env({"FERRYMAN_GRPC": "true"}).grpc
    assert s.identity  # hostname-pid


def test_values_and_flags() -> None:
    env = {
        "FERRYMAN_NAMESPACES": "a, b,,",
        "FERRYMAN_PROMETHEUS_URL": "http://prom:9090/",
        "FERRYMAN_RESYNC_SECONDS": "0.5",
        "FERRYMAN_WORKERS": "3",
        "FERRYMAN_LEADER_ELECTION": "false",
        "FERRYMAN_PREFLIGHT": "0",
        "FERRYMAN_LEASE_NAMESPACE": "ops",
        "FERRYMAN_IDENTITY": "pod-1",
        "FERRYMAN_LOG_LEVEL": "debug",
    }
    s = from_env(env)
    assert s.namespaces == ("a", "b") and not s.clusterwide
    assert s.prometheus_url == "http://prom:9090" and s.resync_seconds == 0.5 and s.workers == 3
    assert not s.leader_election and not s.preflight and s.lease_namespace == "ops"
    assert s.identity == "pod-1" and s.log_level == "DEBUG"
    assert from_env(env, namespaces=["c"]).namespaces == ("c",)
    args = build_parser().parse_args(["--kubeconfig", "k", "-n", "x", "-n", "y"])
    assert args.kubeconfig == "k" and args.namespaces == ["x", "y"]


def test_workload_env_and_pull_policy() -> None:
    s = from_env(
        {
            "FERRYMAN_WORKLOAD_ENV": '[{"name": "A", "value": "1"}, '
            '{"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]',
            "FERRYMAN_IMAGE_PULL_POLICY": "Never",
        }
    )
    assert s.workload_env == (
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    )
    assert s.image_pull_policy == "Never"
    assert from_env({}).workload_env == () and from_env({}).image_pull_policy == "IfNotPresent"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FERRYMAN_RESYNC_SECONDS", "0"),
        ("FERRYMAN_PREFLIGHT", "maybe"),
        ("FERRYMAN_GRPC", "8081"),
        ("FERRYMAN_LEASE_SECONDS", "soon"),
        ("FERRYMAN_IMAGE_PULL_POLICY", "sometimes"),
        ("FERRYMAN_WORKLOAD_ENV", "{not json"),
        ("FERRYMAN_WORKLOAD_ENV", '{"A": "1"}'),
        ("FERRYMAN_WORKLOAD_ENV", '[{"name": "A"}]'),
        ("FERRYMAN_WORKLOAD_ENV", '[{"name": "A", "value": 1}]'),
        ("FERRYMAN_WORKLOAD_ENV", '[{"name": "A", "value": "1", "x": 2}]'),
    ],
)
def test_invalid_values_stop_with_the_setting_named(name: str, value: str) -> None:
    with pytest.raises(SystemExit) as err:
        from_env({name: value})
    assert "invalid setting" in str(err.value)


def test_help_lists_every_variable() -> None:
    text = build_parser().format_help()
    for name in ENV:
        assert name in text


def test_each_setting_is_declared_once_and_env_is_derived_from_it() -> None:
    """The defaults live in the Settings fields: ENV's texts parse back to exactly those defaults, every
    field but the command-line flag has its variable, and nothing in ENV lacks a field."""
    from dataclasses import MISSING, fields

    from ferryman_operator.settings import Settings

    with_env = [f for f in fields(Settings) if "env" in f.metadata]
    assert {f.name for f in fields(Settings)} - {f.name for f in with_env} == {"kubeconfig"}
    assert [f.metadata["env"] for f in with_env] == list(ENV)
    parsed, defaults = from_env({}), Settings()
    for f in with_env:
        if f.default is MISSING:  # computed when the variable is empty
            assert ENV[f.metadata["env"]][0] == ""
            continue
        assert getattr(parsed, f.name) == f.default == getattr(defaults, f.name), f.name
