"""The ray backend: one KubeRay ``RayService`` whose ``serveConfigV2`` is ferryman's Ray Serve application.

The Serve config comes from :func:`ferryman.serve_config.serve_config`, the function ``ferryman up
--runtime ray`` uses too, given the rollout state. The traffic split is the ingress deployment's
``user_config`` in that config, so a rollout step is an in-place, restart-free update of the RayService. The
cluster: a head pod and one
worker per version replica, sized for the largest version. Clients call the Serve Service KubeRay
creates, ``<name>-serve-svc:8000``. Ready when KubeRay reports the ``Ready`` condition (or
``serviceStatus: Running`` on older KubeRay).

Every Ray container runs in Ray's throughput mode (:data:`RAY_ENV`): the ingress replicas serve HTTP
themselves on a port of the direct-ingress range (``RAY_SERVE_DIRECT_INGRESS_*_HTTP_PORT``), and Ray's
HAProxy takes the Python proxy's place on port 8000 of every pod, forwarding to those replica ports on any
node. So ``<name>-serve-svc:8000`` reaches the direct-ingress replicas without a Python proxy hop, and no
Service over the port range is generated: Ray hands out the range's ports per node, lowest free first, with
a quarantine after a replica is replaced (a replica's port is not fixed), and ingress replicas run on only
some of the pods (``max(replicas)`` of ``1 + sum(replicas)``), while a Service sends every one of its ports
to every ready pod it selects — part of the connections would be refused. HAProxy knows where each replica
listens."""

from __future__ import annotations

from typing import Any

from ferryman.serve_config import THROUGHPUT_ENV, parse_cpu, parse_memory, serve_config_yaml
from ferryman.spec import ModelDeployment
from ferryman_operator import names
from ferryman_operator.backends import workloads as w
from ferryman_operator.backends.base import Context, Observed, Readiness, Ref, condition
from ferryman_operator.kube.kinds import RAY_SERVICE, Kind
from ferryman_operator.settings import Settings

RAY_VERSION = "2.60.0"
SERVE_PORT = 8000
_SCHEMES = ("file://", "http://", "https://", "s3://", "/")

# Throughput mode (direct ingress, user code on the replica's event loop, gRPC between deployments) with
# Ray's HAProxy in front of the ingress replicas on the Serve port. The replica ports are Ray's defaults.
RAY_ENV = {**THROUGHPUT_ENV, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_METRICS_EXPORT_PORT": "8080"}


# Ray writes session files under /tmp/ray and caches under $HOME: writable root filesystem, but still
# non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp (restricted profile).
def _ray_container_security() -> dict[str, Any]:
    return w.container_security(readOnlyRootFilesystem=False)


def _pod(
    ctx: Context, *, container: str, component: str, cpu: str, memory: str, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": names.labels(ctx.md.name, component),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": w.pod_security(),
            "containers": [
                {
                    "name": container,
                    "image": ctx.settings.ray_image,
                    "imagePullPolicy": "IfNotPresent",
                    "ports": ports,
                    "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
                    "securityContext": _ray_container_security(),
                    "env": [{"name": k, "value": v} for k, v in sorted(RAY_ENV.items())],
                    "volumeMounts": [{"name": "ray-tmp", "mountPath": "/tmp/ray"}],
                }
            ],
            "volumes": [{"name": "ray-tmp", "emptyDir": {}}],
        },
    }


def ray_service(ctx: Context) -> dict[str, Any]:
    md = ctx.md
    biggest = max(
        md.spec.versions, key=lambda v: (parse_cpu(v.resources.cpu), parse_memory(v.resources.memory))
    )
    workers = sum(max(v.replicas, 1) for v in md.spec.versions)
    head_ports = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": w.metadata(ctx, names.ray_service(md.name), component=names.COMPONENT_RAY),
        "spec": {
            "serveConfigV2": serve_config_yaml(md, state=ctx.state, port=SERVE_PORT),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": _pod(
                        ctx,
                        container="ray-head",
                        component=names.COMPONENT_RAY,
                        cpu="1",
                        memory="2Gi",
                        ports=head_ports,
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "serve",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {},
                        "template": _pod(
                            ctx,
                            container="ray-worker",
                            component=names.COMPONENT_RAY,
                            cpu=biggest.resources.cpu,
                            memory=biggest.resources.memory,
                            ports=[{"name": "serve", "containerPort": SERVE_PORT}],
                        ),
                    }
                ],
            },
        },
    }


class RayBackend:
    name = "ray"
    kinds: tuple[Kind, ...] = (RAY_SERVICE,)

    def validate(self, md: ModelDeployment, settings: Settings) -> list[str]:
        return [
            f"version {v.name}: uri {v.uri!r} is a relative path, which has no meaning on a Ray cluster"
            for v in md.spec.versions
            if not v.uri.startswith(_SCHEMES)
        ]

    def desired(self, ctx: Context) -> list[dict[str, Any]]:
        return [ray_service(ctx)]

    def watched(self, md: ModelDeployment) -> list[Ref]:
        return [(RAY_SERVICE, names.ray_service(md.name))]

    def readiness(self, md: ModelDeployment, observed: Observed) -> Readiness:
        obj = observed.get(("RayService", names.ray_service(md.name)))
        if obj is None:
            state = (False, "RayService not found")
        else:
            status, message = condition(obj, "Ready")
            if status == "Unknown" and (obj.get("status") or {}).get("serviceStatus") == "Running":
                status = "True"
            detail = f" ({message})" if message else ""
            state = (status == "True", f"RayService Ready={status}{detail}")
        # one application serves every version: they are ready together
        return Readiness(versions={v.name: state for v in md.spec.versions}, frontend=state)

    def endpoint(self, md: ModelDeployment, namespace: str) -> str:
        return f"http://{names.ray_service(md.name)}-serve-svc.{namespace}.svc.cluster.local:{SERVE_PORT}"
