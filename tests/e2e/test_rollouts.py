"""Progressive delivery on the real node, decided from what a real Prometheus scraped from the pods.

For every backend of :data:`tests.e2e.scenarios.BACKENDS`:

* the example canary (v1 over HTTP, v2 over S3 from the host) serves the host's requests through the
  gateway's ClusterIP from both versions in the configured proportions, advances on passing analyses and
  is promoted; ``kubectl get mdep`` shows ``Promoted`` and the traffic column;
* a candidate that breaks the latency budget (a slow model) is rolled back automatically while a client
  keeps calling the gateway: not one of its requests fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.cluster.controlplane import ControlPlane
from tests.e2e import mdep, scenarios
from tests.e2e.client import Background, sample
from tests.e2e.kube import cluster_ip, diagnostics, wait_available, wait_for
from tests.e2e.modelstore import ModelStore

BACKENDS = [pytest.param(b, id=b.name) for b in scenarios.BACKENDS]
SAMPLE = 300  # requests counted at the 50 % step: v2's share is within 5 standard deviations of 150


def _deploy(cp: ControlPlane, namespace: str, manifest: dict[str, Any], backend: scenarios.Backend) -> str:
    """Apply the ModelDeployment, wait for its pods and its front door; the base URL from the host."""
    cp.apply({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})
    name = manifest["metadata"]["name"]
    for v in manifest["spec"]["versions"]:

        def created(v: dict[str, Any] = v) -> bool:
            got = cp.kubectl("-n", namespace, "get", "deployment", f"{name}-{v['name']}", check=False)
            return got.returncode == 0

        wait_for(
            created,
            timeout=60,
            what=f"the operator to create {name}-{v['name']}",
            on_timeout=lambda: mdep.history(mdep.status(cp, namespace, name)),
        )
        wait_available(cp, namespace, f"{name}-{v['name']}", timeout=300)
    wait_available(cp, namespace, f"{name}-gateway", timeout=300)
    base = f"http://{cluster_ip(cp, namespace, backend.service(name))}:{backend.port}"
    wait_for(
        lambda: httpx.get(f"{base}/v2/health/ready", timeout=3).status_code == 200,
        timeout=60,
        what=f"the gateway at {base} to be ready",
        on_timeout=lambda: diagnostics(cp, namespace),
    )
    return base


def _share_at(
    base: str, model: str, rows: np.ndarray, weights: dict[str, float], *, attempts: int = 5
) -> tuple[dict[str, int], int]:
    """Count who answers ``SAMPLE`` requests while the gateway applies ``weights`` (checked before and
    after)."""
    for _ in range(attempts):
        wait_for(
            lambda: mdep.gateway_weights(base, model) == weights,
            timeout=240,
            interval=1,
            what=f"the gateway to apply {weights} (the kubelet syncs the routes ConfigMap volume)",
        )
        result = sample(base, model, rows, SAMPLE)
        if mdep.gateway_weights(base, model) == weights:
            assert not result.failures, result.failures[:5]
            return dict(result.versions), result.total
    raise AssertionError(f"the split moved on during every one of {attempts} samples")


@pytest.mark.parametrize("backend", BACKENDS)
def test_canary_is_promoted_from_prometheus_data(
    control_plane: ControlPlane,
    models_ns: str,
    prometheus: str,
    model_store: ModelStore,
    sample_spec: Path,
    rows: np.ndarray,
    backend: scenarios.Backend,
) -> None:
    cp, name = control_plane, "breast-cancer"
    manifest = scenarios.model_deployment(
        sample_spec,
        model_store,
        name=name,
        backend=backend,
        budget_ms=500,
        traffic=scenarios.canary([50, 100], interval=10, min_requests=20),
    )
    base = _deploy(cp, models_ns, manifest, backend)

    with Background(base, name, rows, rate=15) as client:
        counts, total = _share_at(base, name, rows, {"v1": 0.5, "v2": 0.5})
        assert set(counts) == {"v1", "v2"}, counts
        # binomial(300, 0.5): sd 8.7; 5 sd either side
        assert 107 <= counts["v2"] <= 193, f"v2 answered {counts['v2']} of {total} at the 50 % step: {counts}"

        st = mdep.wait_phase(cp, models_ns, name, ("Promoted",), bad=("RolledBack", "Degraded"), timeout=420)
        wait_for(
            lambda: mdep.gateway_weights(base, name) == {"v1": 0.0, "v2": 1.0},
            timeout=240,
            what="the gateway to send everything to v2",
        )
        after = sample(base, name, rows, 20)
        stats = client.stop()
    assert dict(after.versions) == {"v2": 20}, after
    assert not stats.failures, f"{len(stats.failures)} of {stats.total} requests failed: {stats.failures[:5]}"

    # the decisions came from Prometheus (the operator's only source of analysis data in a cluster): the
    # passing analyses counted requests, and the gateway's series are in Prometheus under the pod's namespace
    history = st["rollout"]["history"]
    actions = [h["action"] for h in history]
    assert "advance" in actions and actions[-1] == "promote", mdep.history(st)
    analysis = st["rollout"].get("lastAnalysis") or {}
    assert analysis.get("outcome") == "pass" and analysis.get("requests", 0) >= 20, mdep.history(st)
    series = httpx.get(
        f"{prometheus}/api/v1/query",
        timeout=10,
        params={
            "query": f'sum by (version) (ferryman_requests_total{{namespace="{models_ns}", model="{name}", '
            f'container="gateway"}})'
        },
    ).json()["data"]["result"]
    assert {s["metric"]["version"] for s in series} >= {"v1", "v2"}, series

    # what a person sees: the phase and the traffic column filled in
    row = mdep.printed_row(cp, models_ns, name)
    assert row["PHASE"] == "Promoted", row["_text"]
    assert row["TRAFFIC"] == "v2 100%", row["_text"]
    assert row["STABLE"] == "v2", row["_text"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_slow_candidate_is_rolled_back_without_failing_a_request(
    control_plane: ControlPlane,
    models_ns: str,
    prometheus: str,
    model_store: ModelStore,
    sample_spec: Path,
    rows: np.ndarray,
    model_files: dict[str, Any],
    backend: scenarios.Backend,
) -> None:
    cp, name = control_plane, "breast-cancer"
    slow_path, slow_sha = model_files["slow"]
    manifest = scenarios.model_deployment(
        sample_spec,
        model_store,
        name=name,
        backend=backend,
        budget_ms=150,
        traffic=scenarios.canary([50, 100], interval=10, min_requests=10, failure_threshold=2),
        files={"v2": (str(slow_path), slow_sha)},
    )
    base = _deploy(cp, models_ns, manifest, backend)

    with Background(base, name, rows, rate=10) as client:
        st = mdep.wait_phase(cp, models_ns, name, ("RolledBack",), bad=("Promoted", "Degraded"), timeout=420)
        wait_for(
            lambda: mdep.gateway_weights(base, name) == {"v1": 1.0, "v2": 0.0},
            timeout=240,
            what="the gateway to send everything back to v1",
        )
        time.sleep(2)  # a few more requests on the restored split
        stats = client.stop()
    assert stats.versions["v2"] > 0, f"the candidate never served a request: {stats}"
    assert stats.versions["v1"] > 0, stats
    assert not stats.failures, f"{len(stats.failures)} of {stats.total} requests failed: {stats.failures[:5]}"

    reason = " ".join(h["reason"] for h in st["rollout"]["history"] if h["action"] == "rollback")
    assert "p99" in reason, mdep.history(st)
    row = mdep.printed_row(cp, models_ns, name)
    assert row["PHASE"] == "RolledBack", row["_text"]
    assert row["TRAFFIC"] == "v1 100%", row["_text"]
