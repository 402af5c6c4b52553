"""The test Prometheus' PodMonitor discovery (tests/e2e/podmonitor_sd.py) selects exactly what the chart's
rendered PodMonitor asks for (pure; no cluster needed)."""

from __future__ import annotations

from typing import Any

from tests.e2e.podmonitor_sd import targets
from tests.helpers import helm


def _pod(
    name: str,
    ns: str,
    labels: dict[str, str],
    *,
    ip: str = "10.245.0.9",
    phase: str = "Running",
    port: int = 8080,
    container: str = "server",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": container, "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {"phase": phase, "podIP": ip},
    }


def test_targets_follow_the_charts_pod_monitor() -> None:
    helm.require_helm()
    objs = helm.render(
        values={
            "monitoring": {
                "release": "ferryman-e2e",
                "podMonitor": {"enabled": True, "interval": "2s", "scrapeTimeout": "2s"},
            }
        }
    )
    [pm] = helm.by_kind(objs, "PodMonitor")
    workload = {"app.kubernetes.io/managed-by": "ferryman-operator", "app.kubernetes.io/component": "gateway"}
    pods = [
        _pod("gw", "models", workload, ip="10.245.0.10", container="gateway"),
        _pod("v1", "other", {**workload, "app.kubernetes.io/component": "model-version"}, ip="10.245.0.11"),
        _pod("cfg", "models", {**workload, "app.kubernetes.io/component": "config"}),  # not a workload
        _pod("foreign", "models", {"app.kubernetes.io/component": "gateway"}),  # not the operator's
        _pod("done", "models", workload, phase="Succeeded"),
        _pod("wrong-port", "models", workload, port=9090),
    ]
    found = targets([pm], pods)
    assert [g["targets"] for g in found] == [["10.245.0.10:8080"], ["10.245.0.11:8080"]]
    gw = found[0]["labels"]
    assert gw["namespace"] == "models" and gw["pod"] == "gw" and gw["container"] == "gateway"
    assert gw["job"] == "gateway"  # jobLabel: app.kubernetes.io/component
    assert gw["__metrics_path__"] == "/metrics" and gw["__scrape_interval__"] == "2s"
    assert found[1]["labels"]["job"] == "model-version"

    only_models = {**pm, "spec": {**pm["spec"], "namespaceSelector": {"matchNames": ["models"]}}}
    assert [g["labels"]["pod"] for g in targets([only_models], pods)] == ["gw"]
