"""What the end-to-end tests deploy: the backends (one row each) and the ModelDeployments.

:data:`BACKENDS` is the scenario table the rollout tests are parametrised over. A backend is the runtime a
ModelDeployment names plus where its front door is (the Service and port the host's client calls). Only
``native`` runs today; the next issue adds

* ``Backend("ray", runtime="ray", front_service="{name}-serve-svc", port=8000)`` once the KubeRay operator
  runs on the node (and the ray image is in ``release.IMAGES``);
* ``Backend("kserve", runtime="kserve", front_service="{name}", port=8080)`` once the KServe controller
  runs (the chart with ``kserve.enabled``);

and every rollout test then runs for them too.

:func:`model_deployment` turns the sample ``deployment.yaml`` of ``ferryman examples export`` into a
manifest for the cluster: v1's model over HTTP and the candidate's over S3 from the host's model store,
small pods, drift off (the analysis reads Prometheus only), and the given traffic section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.modelstore import ModelStore


@dataclass(frozen=True)
class Backend:
    name: str
    runtime: str
    front_service: str = "{name}"  # the Service the host calls, formatted with the ModelDeployment's name
    port: int = 8080

    def service(self, md_name: str) -> str:
        return self.front_service.format(name=md_name)


BACKENDS = (Backend("native", runtime="native"),)

# what each version pod asks for: the node has 2 CPUs for everything
POD_RESOURCES = {"cpu": "100m", "memory": "512Mi"}


def canary(
    steps: list[int], *, interval: float, min_requests: int, failure_threshold: int = 2
) -> dict[str, Any]:
    return {
        "strategy": "canary",
        "stable": "v1",
        "candidate": "v2",
        "canary": {
            "steps": steps,
            "intervalSeconds": interval,
            "minRequests": min_requests,
            "failureThreshold": failure_threshold,
        },
    }


def static(version: str = "v1") -> dict[str, Any]:
    return {"strategy": "static", "stable": version}


def model_deployment(
    sample_spec: Path,
    store: ModelStore,
    *,
    name: str,
    backend: Backend,
    traffic: dict[str, Any],
    budget_ms: float,
    files: dict[str, tuple[str, str]] | None = None,
    replicas: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The sample spec for the cluster. ``files`` maps a version to (path in the store, sha256) to
    replace its model (e.g. the slow one); v1 is fetched over HTTP, the others over S3."""
    doc: dict[str, Any] = yaml.safe_load(sample_spec.read_text())
    versions = []
    for v in doc["spec"]["versions"]:
        rel, sha = (files or {}).get(v["name"], (v["uri"], v.get("sha256")))
        uri = store.http(rel) if v["name"] == "v1" else store.s3(rel)
        entry = {
            "name": v["name"],
            "uri": uri,
            "replicas": (replicas or {}).get(v["name"], 1),
            "resources": POD_RESOURCES,
        }
        if sha:
            entry["sha256"] = sha
        versions.append(entry)
    return {
        "apiVersion": doc["apiVersion"],
        "kind": doc["kind"],
        "metadata": {"name": name},
        "spec": {
            "runtime": backend.runtime,
            "versions": versions,
            "budget": {"p99Ms": budget_ms, "maxErrorRate": 0.01},
            "traffic": traffic,
            "drift": {"enabled": False},
        },
    }
