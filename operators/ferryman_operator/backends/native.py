"""The native backend: a Deployment + Service per version (``ferryman serve``) behind the ferryman gateway.

Objects for ModelDeployment ``m`` with versions v1, v2 in namespace ``ns``:

* ConfigMap ``m-versions``: one single-version spec per version (key ``<version>.yaml``);
* Deployment + Service ``m-v1``, ``m-v2``: ``ferryman serve /etc/ferryman/spec/model.yaml`` on port 8080;
* ConfigMap ``m-routes`` (``routes.json``), Deployment ``m-gateway`` and Service ``m``: the gateway, which
  forwards to ``http://m-<version>.ns.svc.cluster.local:8080`` (with gRPC on: also gRPC on port 8081 of
  every server and Service, forwarded to ``m-<version>.ns.svc.cluster.local:8081``).

A version's pods roll only when its own spec changes (a hash of it is in the pod template); rollout steps
only rewrite ``m-routes``."""

from __future__ import annotations

from typing import Any

import yaml

from ferryman.spec import ModelDeployment
from ferryman_operator import names
from ferryman_operator.backends import workloads as w
from ferryman_operator.backends.base import Context, Observed, Readiness, Ref, deployment_ready
from ferryman_operator.kube.kinds import CONFIG_MAP, DEPLOYMENT, SERVICE, Kind
from ferryman_operator.settings import Settings

_SCHEMES = ("file://", "http://", "https://", "s3://")


def version_spec(md: ModelDeployment, version: str) -> dict[str, Any]:
    """The spec one version server loads: only that version, served statically."""
    doc = md.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
    doc["metadata"] = {"name": md.name}
    doc["spec"]["versions"] = [v for v in doc["spec"]["versions"] if v["name"] == version]
    doc["spec"]["traffic"] = {"strategy": "static", "stable": version}
    return doc


def uri_problems(md: ModelDeployment) -> list[str]:
    """Relative paths mean nothing inside a pod: URIs must be absolute paths or file/http(s)/s3 URLs."""
    problems = []
    for v in md.spec.versions:
        for field, uri in (("uri", v.uri), ("referenceData", v.reference_data)):
            if uri and not (uri.startswith(_SCHEMES) or uri.startswith("/")):
                problems.append(
                    f"version {v.name}: {field} {uri!r} is a relative path, which has no meaning in a "
                    f"pod; use an absolute path (image or volume), http(s):// or s3://"
                )
    return problems


class NativeBackend:
    name = "native"
    kinds: tuple[Kind, ...] = (DEPLOYMENT, SERVICE, CONFIG_MAP)

    def validate(self, md: ModelDeployment, settings: Settings) -> list[str]:
        return uri_problems(md)

    def desired(self, ctx: Context) -> list[dict[str, Any]]:
        md = ctx.md
        specs = {v.name: yaml.safe_dump(version_spec(md, v.name), sort_keys=True) for v in md.spec.versions}
        config_name = names.versions_config_map(md.name)
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": w.metadata(ctx, config_name, component=names.COMPONENT_CONFIG),
                "data": {f"{v}.yaml": text for v, text in specs.items()},
            }
        ]
        backends, grpc_backends = {}, {}
        for v in md.spec.versions:
            obj_name = names.version_object(md.name, v.name)
            pod_labels = names.labels(md.name, names.COMPONENT_MODEL, v.name)
            container = {
                "name": "server",
                "image": ctx.settings.image,
                "imagePullPolicy": ctx.settings.image_pull_policy,
                "command": w.COMMAND,
                "args": [
                    "serve",
                    f"{w.SPEC_DIR}/model.yaml",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    str(w.HTTP_PORT),
                    *w.grpc_args(ctx),
                ],
                "ports": w.container_ports(ctx),
                "env": [
                    {"name": "FERRYMAN_MODEL_CACHE", "value": f"{w.CACHE_DIR}/models"},
                    *ctx.settings.workload_env,
                ],
                "resources": w.resources(v.resources),
                "readinessProbe": w.http_probe("/v2/health/ready", period=5, failures=2),
                "livenessProbe": w.http_probe("/v2/health/live", period=10, failures=3),
                "startupProbe": w.http_probe("/v2/health/live", period=5, failures=60),
                "lifecycle": w.LIFECYCLE,
                "securityContext": w.container_security(),
                "volumeMounts": [
                    {"name": "spec", "mountPath": w.SPEC_DIR, "readOnly": True},
                    *w.scratch_mounts(),
                ],
            }
            volumes = [
                {
                    "name": "spec",
                    "configMap": {
                        "name": config_name,
                        "items": [{"key": f"{v.name}.yaml", "path": "model.yaml"}],
                    },
                },
                *w.scratch_volumes(),
            ]
            annotations = {
                **w.scrape_annotations(),
                names.ANNOTATION_SPEC_HASH: names.short_hash(specs[v.name]),
            }
            objects.append(
                w.deployment(
                    ctx,
                    name=obj_name,
                    component=names.COMPONENT_MODEL,
                    replicas=v.replicas,
                    pod_labels=pod_labels,
                    containers=[container],
                    volumes=volumes,
                    pod_annotations=annotations,
                    version=v.name,
                )
            )
            objects.append(
                w.service(
                    ctx, name=obj_name, component=names.COMPONENT_MODEL, pod_labels=pod_labels, version=v.name
                )
            )
            backends[v.name] = w.service_url(ctx.namespace, obj_name)
            grpc_backends[v.name] = w.grpc_address(ctx.namespace, obj_name)
        objects.extend(w.gateway_objects(ctx, backends=backends, grpc_backends=grpc_backends))
        return objects

    def watched(self, md: ModelDeployment) -> list[Ref]:
        refs: list[Ref] = [(DEPLOYMENT, names.version_object(md.name, v.name)) for v in md.spec.versions]
        refs.append((DEPLOYMENT, names.gateway_deployment(md.name)))
        return refs

    def readiness(self, md: ModelDeployment, observed: Observed) -> Readiness:
        versions = {
            v.name: deployment_ready(
                observed.get(("Deployment", names.version_object(md.name, v.name))), what=f"version {v.name}"
            )
            for v in md.spec.versions
        }
        gateway = deployment_ready(
            observed.get(("Deployment", names.gateway_deployment(md.name))), what="gateway"
        )
        return Readiness(versions=versions, frontend=gateway)

    def endpoint(self, md: ModelDeployment, namespace: str) -> str:
        return w.service_url(namespace, names.gateway_service(md.name))
