"""The operator's identity on a test or bench cluster: its ServiceAccount bound to exactly the chart's RBAC
(``operators/ferryman_operator/rbac.yaml``), and a kubeconfig holding a token of that ServiceAccount.

Pure documents; the caller applies them and asks for the token (``kubectl create token``), so the scale
bench (``loadtests/operator_scale``) and the cluster tests (``tests/cluster/operator_harness.py``) run the
operator with the permissions a Helm install gives it, not an administrator's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RBAC_FILE = ROOT / "operators" / "ferryman_operator" / "rbac.yaml"
SERVICE_ACCOUNT = "ferryman-operator"

Doc = dict[str, Any]


def rbac_documents() -> tuple[Doc, Doc]:
    """The chart's ClusterRole (what the operator may do) and Lease Role (leader election)."""
    cluster_role, lease_role = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    return cluster_role, lease_role


def _binding(kind: str, *, name: str, namespace: str | None, role: Doc, subject: list[Doc]) -> Doc:
    meta: Doc = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role["kind"],
            "name": role["metadata"]["name"],
        },
        "subjects": subject,
    }


def identity_documents(namespace: str, *, cluster_wide: bool) -> list[Doc]:
    """The ServiceAccount in ``namespace``, the chart's roles, and their bindings: the ClusterRole bound
    cluster-wide (as the chart does it) or in ``namespace`` only (tests sharing one cluster), the Lease Role
    in ``namespace``."""
    cluster_role, lease_role = rbac_documents()
    lease_role = {**lease_role, "metadata": {**lease_role["metadata"], "namespace": namespace}}
    sa = SERVICE_ACCOUNT
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
    return [
        cluster_role,
        lease_role,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace}},
        _binding(
            "ClusterRoleBinding" if cluster_wide else "RoleBinding",
            name=sa,
            namespace=None if cluster_wide else namespace,
            role=cluster_role,
            subject=subject,
        ),
        _binding(
            "RoleBinding", name=f"{sa}-leader-election", namespace=namespace, role=lease_role, subject=subject
        ),
    ]


def kubeconfig(admin_kubeconfig: Path, *, token: str, namespace: str, cluster_name: str) -> Doc:
    """A kubeconfig for the same server as ``admin_kubeconfig``, as the ServiceAccount holding ``token``."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    sa = SERVICE_ACCOUNT
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "operator",
        "clusters": [{"name": cluster_name, "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": cluster_name, "user": sa, "namespace": namespace}}
        ],
    }


def write_private(path: Path, doc: Doc) -> Path:
    """Write a kubeconfig readable by its owner only."""
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path
