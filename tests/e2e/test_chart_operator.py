"""The chart's operator on the real node: it runs from the image built here, holds the real Lease and serves
its health endpoint on its pod IP (what the kubelet's probes call)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.cluster.controlplane import ControlPlane
from tests.e2e.kube import pod_ready, wait_for
from tests.e2e.release import Images, Release


def test_operator_pod_runs_from_the_local_image_and_holds_the_lease(
    control_plane: ControlPlane, release: Release, ferryman_images: Images
) -> None:
    pods = release.operator_pods()
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    assert pod_ready(pod), pod.get("status")
    assert pod["spec"]["nodeName"] == control_plane.node_name  # the kubelet node, not KWOK
    container = pod["spec"]["containers"][0]
    assert container["image"] == ferryman_images.operator
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and "running" in status["state"], status
    assert status["restartCount"] == 0, status

    name = pod["metadata"]["name"]

    def held() -> dict[str, Any] | None:
        lease = release.lease()
        return lease if lease["spec"].get("holderIdentity") == name else None

    lease = wait_for(held, timeout=60, what=f"the Lease to be held by {name}")
    assert lease["spec"]["leaseDurationSeconds"] == 6  # ci/e2e-values.yaml

    health = httpx.get(f"http://{pod['status']['podIP']}:8081/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["leader"] is True, health.text
