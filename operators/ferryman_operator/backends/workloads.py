"""Building blocks shared by the backends: object metadata, restricted pod security, the ferryman gateway.

Every pod passes the ``restricted`` Pod Security Standard (non-root, no privilege escalation, all
capabilities dropped, RuntimeDefault seccomp, read-only root filesystem with emptyDir scratch space).

The gateway (native and kserve backends) is a Deployment + Service running ``ferryman gateway``: it reads
``routes.json`` (:mod:`ferryman.routes`) from the routes ConfigMap, mounted at :data:`ROUTES_DIR`, and
forwards each request to the chosen version's ``backends`` URL. The operator rewrites the ConfigMap at
every rollout step; the pods are never restarted for it (nothing in the pod template changes).

With ``Settings.grpc`` (``FERRYMAN_GRPC``) the gateway and the version servers also serve the v2 gRPC
service on :data:`GRPC_PORT` (container and Service port ``grpc``, ``appProtocol: kubernetes.io/h2c``) and
``routes.json`` carries each version's gRPC address (``grpcBackends``).
"""

from __future__ import annotations

import copy
from typing import Any

from ferryman.routes import ROUTES_KEY, table_to_json
from ferryman.spec import Resources
from ferryman_operator import names
from ferryman_operator.backends.base import Context

HTTP_PORT = 8080
GRPC_PORT = 8081  # KServe's convention next to 8080
ROUTES_DIR = "/etc/ferryman/routes"
SPEC_DIR = "/etc/ferryman/spec"
CACHE_DIR = "/var/cache/ferryman"
RUN_AS = 10001
# The image's ENTRYPOINT is the KServe runtime (what a ClusterServingRuntime runs); the gateway and the
# version servers name their program, so ``args`` never reach another entrypoint.
COMMAND = ["ferryman"]
# Kept serving this long after the pod is marked for deletion: kube-proxy and the gateways' connection
# pools drop the endpoint before the server stops accepting connections (no refused requests on scale-in,
# rolling updates or a deleted pod).
PRE_STOP_SECONDS = 5
LIFECYCLE = {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_security() -> dict[str, Any]:
    """A fresh copy of the restricted pod security context (objects never share nested dicts)."""
    return copy.deepcopy(POD_SECURITY)


def container_security(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of the restricted container security context, with ``overrides`` applied."""
    return {**copy.deepcopy(CONTAINER_SECURITY), **overrides}


def metadata(
    ctx: Context,
    name: str,
    *,
    component: str,
    version: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ctx.namespace,
        "labels": names.labels(ctx.md.name, component, version),
        "ownerReferences": [ctx.owner],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def resources(r: Resources) -> dict[str, Any]:
    return {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": {"memory": r.memory}}


def http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def scratch_volumes() -> list[dict[str, Any]]:
    return [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]


def scratch_mounts() -> list[dict[str, Any]]:
    return [{"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]


def deployment(
    ctx: Context,
    *,
    name: str,
    component: str,
    replicas: int,
    pod_labels: dict[str, str],
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pod_annotations: dict[str, str] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    selector = {
        k: pod_labels[k]
        for k in (names.LABEL_DEPLOYMENT, names.LABEL_COMPONENT, names.LABEL_VERSION)
        if k in pod_labels
    }
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, name, component=component, version=version),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def grpc_args(ctx: Context) -> list[str]:
    """``ferryman serve`` / ``ferryman gateway`` arguments for the gRPC listener (none when it is off)."""
    return ["--grpc-port", str(GRPC_PORT)] if ctx.settings.grpc else []


def container_ports(ctx: Context) -> list[dict[str, Any]]:
    """The ``http`` port, and ``grpc`` when gRPC is on (first: KServe maps a predictor's first port to 80)."""
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if ctx.settings.grpc:
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    return ports


def service(
    ctx: Context, *, name: str, component: str, pod_labels: dict[str, str], version: str | None = None
) -> dict[str, Any]:
    selector = {
        k: pod_labels[k]
        for k in (names.LABEL_DEPLOYMENT, names.LABEL_COMPONENT, names.LABEL_VERSION)
        if k in pod_labels
    }
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    if ctx.settings.grpc:
        ports.append(
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, name, component=component, version=version),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": ports,
        },
    }


def service_url(namespace: str, name: str, port: int = HTTP_PORT) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"


def grpc_address(namespace: str, name: str, port: int = GRPC_PORT) -> str:
    """A Service's gRPC address as ``grpcBackends`` holds it (``host:port``)."""
    return f"{name}.{namespace}.svc.cluster.local:{port}"


# -- the gateway ------------------------------------------------------------------------------------
def gateway_objects(
    ctx: Context, *, backends: dict[str, str], grpc_backends: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Routes ConfigMap + gateway Deployment + the model's Service (named like the ModelDeployment).
    ``grpc_backends``: each version's gRPC address, when gRPC is on."""
    md = ctx.md
    routes = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ctx, names.routes_config_map(md.name), component=names.COMPONENT_CONFIG),
        "data": {
            ROUTES_KEY: table_to_json(
                ctx.table, backends=backends, grpc_backends=grpc_backends if ctx.settings.grpc else None
            )
        },
    }
    pod_labels = names.labels(md.name, names.COMPONENT_GATEWAY)
    container = {
        "name": "gateway",
        "image": ctx.settings.image,
        "imagePullPolicy": ctx.settings.image_pull_policy,
        "command": COMMAND,
        "args": [
            "gateway",
            "--routes",
            f"{ROUTES_DIR}/{ROUTES_KEY}",
            "--host",
            "0.0.0.0",
            "--port",
            str(HTTP_PORT),
            *grpc_args(ctx),
        ],
        "ports": container_ports(ctx),
        "env": [{"name": "FERRYMAN_MODEL", "value": md.name}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": http_probe("/v2/health/ready", period=5, failures=2),
        "livenessProbe": http_probe("/v2/health/live", period=10, failures=3),
        "lifecycle": LIFECYCLE,
        "securityContext": container_security(),
        "volumeMounts": [{"name": "routes", "mountPath": ROUTES_DIR, "readOnly": True}, *scratch_mounts()],
    }
    volumes = [
        {"name": "routes", "configMap": {"name": names.routes_config_map(md.name)}},
        *scratch_volumes(),
    ]
    gateway = deployment(
        ctx,
        name=names.gateway_deployment(md.name),
        component=names.COMPONENT_GATEWAY,
        replicas=1,
        pod_labels=pod_labels,
        containers=[container],
        volumes=volumes,
        pod_annotations=scrape_annotations(),
    )
    svc = service(
        ctx, name=names.gateway_service(md.name), component=names.COMPONENT_GATEWAY, pod_labels=pod_labels
    )
    return [routes, gateway, svc]


def scrape_annotations() -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
    }
