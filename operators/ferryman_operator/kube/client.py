"""The operator's Kubernetes client: a thin async layer over the REST API (httpx), nothing generated.

* :meth:`KubeClient.apply` is server-side apply (field manager ``ferryman-operator``, forced): applying
  the same object twice changes nothing, so reconciles are idempotent.
* :meth:`KubeClient.replace_status` is a PUT of the status subresource carrying ``resourceVersion``: the
  apiserver answers 409 when someone else wrote first, and the caller re-reads and decides again
  (optimistic concurrency).
* Failures raise :class:`ApiError` with the apiserver's status code, reason and message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import kopf

from ferryman_operator.kube.config import connection_info

log = logging.getLogger("ferryman.operator.kube")

FIELD_MANAGER = "ferryman-operator"


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
CLUSTER_SERVING_RUNTIME = Kind("serving.kserve.io/v1alpha1", "ClusterServingRuntime", "clusterservingruntimes",
                               namespaced=False)

KINDS: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in (
    MODEL_DEPLOYMENT, DEPLOYMENT, SERVICE, CONFIG_MAP, EVENT, LEASE, RAY_SERVICE, INFERENCE_SERVICE, HTTP_ROUTE,
    CLUSTER_SERVING_RUNTIME)}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError as err:
        raise ValueError(f"unsupported object {obj.get('apiVersion')}/{obj.get('kind')}") from err


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo | None = None, *, timeout: float = 30.0) -> None:
        self._timeout = timeout
        self._client = self._connect(info or connection_info())

    def _connect(self, info: kopf.ConnectionInfo) -> httpx.AsyncClient:
        headers = {"Accept": "application/json", "User-Agent": FIELD_MANAGER}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = httpx.BasicAuth(info.username, info.password or "") if info.username else None
        return httpx.AsyncClient(base_url=info.server, verify=info.as_ssl_context(), headers=headers, auth=auth,
                                 timeout=self._timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        try:
            resp = await self._client.request(method, path, content=content, params=params, headers=headers)
            if resp.status_code == 401:  # rotated ServiceAccount token: log in again, once
                await self._client.aclose()
                self._client = self._connect(connection_info())
                resp = await self._client.request(method, path, content=content, params=params, headers=headers)
        except httpx.TransportError as err:
            raise ApiError(0, "Unreachable", f"{type(err).__name__}: {err}", method=method, path=path) from err
        if resp.status_code >= 400:
            reason, message = "", resp.text[:500]
            try:
                doc = resp.json()
                reason, message = doc.get("reason", ""), doc.get("message", message)
            except ValueError:
                pass
            raise ApiError(resp.status_code, reason or resp.reason_phrase, message, method=method, path=path)
        return resp.json() if resp.content else None

    # -- reads ----------------------------------------------------------------------------------------
    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.request("GET", kind.path(namespace, name))
        except ApiError as err:
            if err.not_found:
                return None
            raise
        return obj

    async def list(self, kind: Kind, namespace: str | None, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        doc = await self.request("GET", kind.path(namespace), params=params)
        items: list[dict[str, Any]] = doc.get("items", [])
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    # -- writes ---------------------------------------------------------------------------------------
    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply: create or update to exactly the fields given (idempotent)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        result: dict[str, Any] = await self.request("PATCH", kind.path(meta.get("namespace"), meta["name"]),
                                                    body=obj, params=params,
                                                    content_type="application/apply-patch+yaml")
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        result: dict[str, Any] = await self.request("POST", kind.path(obj["metadata"].get("namespace")), body=obj)
        return result

    async def replace(self, obj: Mapping[str, Any], *, sub: str | None = None) -> dict[str, Any]:
        """PUT the object (or a subresource); ``metadata.resourceVersion`` makes it conditional."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request("PUT", kind.path(meta.get("namespace"), meta["name"], sub),
                                                    body=obj)
        return result

    async def replace_status(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.replace(obj, sub="status")

    async def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PATCH", kind.path(namespace, name), body=patch,
                                                    content_type="application/merge-patch+json")
        return result

    async def delete(self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None) -> bool:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", kind.path(namespace, name), body=body)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return True
