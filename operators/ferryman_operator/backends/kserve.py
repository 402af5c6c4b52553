"""The kserve backend: one InferenceService per version (ferryman's ClusterServingRuntime) behind the gateway.

Objects for ModelDeployment ``m`` with versions v1, v2 in namespace ``ns``:

* InferenceService ``m-v1``, ``m-v2`` (RawDeployment mode, ``runtime: <FERRYMAN_KSERVE_RUNTIME>``,
  ``modelFormat: onnx``, protocol v2, ``storageUri`` = the version's URI, replicas and resources from the
  spec, predictor ``args`` ``--model_name=m --model_version=v1``, ``FERRYMAN_THREADS`` from the spec).
  KServe's storage initializer fetches the model into ``/mnt/models``; KServe appends the predictor's args
  to the runtime's (the last occurrence wins), so every version answers as ``/v2/models/m/infer`` and
  names itself in ``model_version``.
* ConfigMap ``m-routes``, Deployment ``m-gateway``, Service ``m``: the ferryman gateway, forwarding to
  each version's predictor Service ``http://m-<version>-predictor.ns.svc.cluster.local``.

With gRPC on (``FERRYMAN_GRPC``) each predictor also gets ``--grpc_port=8081`` and both container ports
(8080 first: a RawDeployment's predictor Service maps its first port to 80 and exposes the others as
they are), so the gateway forwards gRPC to ``m-<version>-predictor.ns.svc.cluster.local:8081``.

KServe's own canary (``canaryTrafficPercent``) needs Knative; the gateway gives every strategy (canary,
blue-green, sticky A/B, shadow) on plain Deployments instead. A version is ready when its
InferenceService reports the ``Ready`` condition.

This is the only InferenceService builder: the ``ferryman-onnx`` ClusterServingRuntime it names is the
committed ``runtimes/ferryman_runtimes/kserve/clusterservingruntime.yaml`` (the Helm chart ships a copy).
tests/unit/test_kserve_contract.py checks both against KServe's CRD schemas, the cluster tests against the
apiserver with those CRDs installed.
"""

from __future__ import annotations

from typing import Any

from ferryman.spec import ModelDeployment, Resources
from ferryman_operator import names
from ferryman_operator.backends import workloads as w
from ferryman_operator.backends.base import Context, Observed, Readiness, Ref, condition, deployment_ready
from ferryman_operator.kube.kinds import CONFIG_MAP, DEPLOYMENT, INFERENCE_SERVICE, SERVICE, Kind
from ferryman_operator.settings import Settings

STORAGE_SCHEMES = (
    "s3://",
    "gs://",
    "http://",
    "https://",
    "pvc://",
    "oci://",
    "hdfs://",
    "webhdfs://",
    "hf://",
)
DEPLOYMENT_MODE = "RawDeployment"


def predictor_args(md: ModelDeployment, version: str, *, grpc: bool = False) -> list[str]:
    """The runtime arguments an InferenceService adds: the model's name and the version it reports (and the
    gRPC port, KServe's argument, when gRPC is on)."""
    args = [f"--model_name={md.name}", f"--model_version={md.spec.version(version).name}"]
    return [*args, f"--grpc_port={w.GRPC_PORT}"] if grpc else args


def predictor_resources(r: Resources) -> dict[str, Any]:
    """Requests and limits, both complete. KServe fills a missing limit from its own configuration (its
    defaulting webhook: cpu 1, memory 2Gi) and merges the runtime container's resources into the predictor's
    key by key (a strategic merge patch): a version asking for more CPU than such a limit would otherwise get
    a pod the apiserver refuses (request above limit)."""
    quantities = {"cpu": r.cpu, "memory": r.memory}
    return {"requests": quantities, "limits": dict(quantities)}


def inference_service(ctx: Context, version: str) -> dict[str, Any]:
    md = ctx.md
    v = md.spec.version(version)
    model: dict[str, Any] = {
        "modelFormat": {"name": "onnx"},
        "runtime": ctx.settings.kserve_runtime,
        "protocolVersion": "v2",
        "storageUri": v.uri,
        # appended to the ClusterServingRuntime's args (``--model_name={{.Name}}`` ...); the last one wins,
        # so every version is served as /v2/models/<ModelDeployment name> and reports its own version
        "args": predictor_args(md, version, grpc=ctx.settings.grpc),
        "resources": predictor_resources(v.resources),
        "securityContext": w.container_security(),
        "env": [{"name": "FERRYMAN_THREADS", "value": str(md.spec.threads)}],
    }
    if ctx.settings.grpc:  # both, in order: merged into the runtime's container port by port
        model["ports"] = [
            {"containerPort": w.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": w.GRPC_PORT, "protocol": "TCP"},
        ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": w.metadata(
            ctx,
            names.version_object(md.name, version),
            component=names.COMPONENT_MODEL,
            version=version,
            annotations={"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE, **w.scrape_annotations()},
        ),
        "spec": {
            "predictor": {
                "minReplicas": v.replicas,
                "maxReplicas": max(v.replicas, 1),
                "securityContext": w.pod_security(),
                "model": model,
            },
        },
    }


def predictor_url(md: ModelDeployment, namespace: str, version: str) -> str:
    return f"http://{names.version_object(md.name, version)}-predictor.{namespace}.svc.cluster.local"


def predictor_grpc_address(md: ModelDeployment, namespace: str, version: str) -> str:
    return f"{names.version_object(md.name, version)}-predictor.{namespace}.svc.cluster.local:{w.GRPC_PORT}"


class KServeBackend:
    name = "kserve"
    kinds: tuple[Kind, ...] = (INFERENCE_SERVICE, DEPLOYMENT, SERVICE, CONFIG_MAP)

    def validate(self, md: ModelDeployment, settings: Settings) -> list[str]:
        problems = []
        for v in md.spec.versions:
            if not v.uri.startswith(STORAGE_SCHEMES):
                problems.append(
                    f"version {v.name}: uri {v.uri!r} cannot be a KServe storageUri "
                    f"(use one of {', '.join(s[:-3] for s in STORAGE_SCHEMES)})"
                )
        return problems

    def desired(self, ctx: Context) -> list[dict[str, Any]]:
        md = ctx.md
        objects = [inference_service(ctx, v.name) for v in md.spec.versions]
        backends = {v.name: predictor_url(md, ctx.namespace, v.name) for v in md.spec.versions}
        grpc_backends = {v.name: predictor_grpc_address(md, ctx.namespace, v.name) for v in md.spec.versions}
        objects.extend(w.gateway_objects(ctx, backends=backends, grpc_backends=grpc_backends))
        return objects

    def watched(self, md: ModelDeployment) -> list[Ref]:
        refs: list[Ref] = [
            (INFERENCE_SERVICE, names.version_object(md.name, v.name)) for v in md.spec.versions
        ]
        refs.append((DEPLOYMENT, names.gateway_deployment(md.name)))
        return refs

    def readiness(self, md: ModelDeployment, observed: Observed) -> Readiness:
        versions = {}
        for v in md.spec.versions:
            obj = observed.get(("InferenceService", names.version_object(md.name, v.name)))
            if obj is None:
                versions[v.name] = (False, f"version {v.name}: InferenceService not found")
                continue
            status, message = condition(obj, "Ready")
            detail = f" ({message})" if message else ""
            versions[v.name] = (
                status == "True",
                f"version {v.name}: InferenceService Ready={status}{detail}",
            )
        gateway = deployment_ready(
            observed.get(("Deployment", names.gateway_deployment(md.name))), what="gateway"
        )
        return Readiness(versions=versions, frontend=gateway)

    def endpoint(self, md: ModelDeployment, namespace: str) -> str:
        return w.service_url(namespace, names.gateway_service(md.name))
