"""Names, labels and owner references of the objects the operator creates. Pure.

Object names are DNS-1035 labels (Service names must start with a letter and stay within 63 characters);
long or unusual combinations are shortened with a stable hash suffix, so the same spec always maps to the
same names. Every object carries the labels in :func:`labels` and an owner reference to its
ModelDeployment, so ``kubectl get all -l serving.ferryman.dev/deployment=NAME`` lists them and deleting the
ModelDeployment lets the garbage collector delete them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ferryman.spec import API_GROUP

LABEL_DEPLOYMENT = f"{API_GROUP}/deployment"
LABEL_VERSION = f"{API_GROUP}/version"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "ferryman-operator"
ANNOTATION_SPEC_HASH = f"{API_GROUP}/spec-hash"
# hash of what the operator last applied to an object: an unchanged desired object is not applied again
ANNOTATION_APPLIED = f"{API_GROUP}/applied"

COMPONENT_MODEL = "model-version"
COMPONENT_GATEWAY = "gateway"
COMPONENT_CONFIG = "config"
COMPONENT_RAY = "ray-serve"

_RESERVED = {"gateway", "routes", "versions"}
_INVALID = re.compile(r"[^a-z0-9-]+")


def dns_name(*parts: str, limit: int = 63) -> str:
    """Join parts into a DNS-1035 label (lowercase, starts with a letter, <= ``limit`` characters).

    A name that had to change (other characters, too long) gets a hash of the original appended, so two
    different inputs never end up with the same name.
    """
    raw = "-".join(parts)
    name = _INVALID.sub("-", raw.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"m-{name}".rstrip("-")
    if name == raw and len(name) <= limit:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def version_object(md_name: str, version: str) -> str:
    """Deployment/Service/InferenceService of one version: ``<model>-<version>``."""
    return dns_name(md_name, "version", version) if version in _RESERVED else dns_name(md_name, version)


def gateway_deployment(md_name: str) -> str:
    return dns_name(md_name, "gateway")


def gateway_service(md_name: str) -> str:
    """The model's endpoint: a Service named like the ModelDeployment."""
    return dns_name(md_name)


def routes_config_map(md_name: str) -> str:
    return dns_name(md_name, "routes")


def versions_config_map(md_name: str) -> str:
    return dns_name(md_name, "versions")


def ray_service(md_name: str) -> str:
    return dns_name(md_name)


def labels(md_name: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "ferryman",
        "app.kubernetes.io/instance": md_name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: md_name,
    }
    if version is not None:
        out[LABEL_VERSION] = version
    return out


def selector(md_name: str) -> str:
    """Label selector of everything the operator made for one ModelDeployment."""
    return f"{LABEL_DEPLOYMENT}={md_name},{LABEL_MANAGED_BY}={MANAGED_BY}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
