"""The Kubernetes kinds the operator reads and writes, and their REST paths. Pure (no client, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


MODEL_DEPLOYMENT = Kind("serving.ferryman.dev/v1alpha1", "ModelDeployment", "modeldeployments")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
SERVICE = Kind("v1", "Service", "services")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
EVENT = Kind("v1", "Event", "events")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
RAY_SERVICE = Kind("ray.io/v1", "RayService", "rayservices")
INFERENCE_SERVICE = Kind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices")
HTTP_ROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
CLUSTER_SERVING_RUNTIME = Kind(
    "serving.kserve.io/v1alpha1", "ClusterServingRuntime", "clusterservingruntimes", namespaced=False
)

KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        MODEL_DEPLOYMENT,
        DEPLOYMENT,
        SERVICE,
        CONFIG_MAP,
        EVENT,
        LEASE,
        RAY_SERVICE,
        INFERENCE_SERVICE,
        HTTP_ROUTE,
        CLUSTER_SERVING_RUNTIME,
    )
}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError as err:
        raise ValueError(f"unsupported object {obj.get('apiVersion')}/{obj.get('kind')}") from err
