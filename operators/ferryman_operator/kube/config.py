"""Credentials: a kubeconfig file (``--kubeconfig`` or ``$KUBECONFIG``) or the pod's ServiceAccount.

The same :class:`kopf.ConnectionInfo` feeds kopf's watch streams (through the ``@kopf.on.login`` handler)
and the operator's own client, so both talk to the same server as the same identity.
"""

from __future__ import annotations

import os

import kopf

_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class ConfigError(RuntimeError):
    pass


def use_kubeconfig(path: str | None) -> None:
    """Make ``path`` the kubeconfig for everything in this process (kopf reads ``$KUBECONFIG``)."""
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"kubeconfig {path!r} not found")
        os.environ["KUBECONFIG"] = os.path.abspath(path)


def connection_info() -> kopf.ConnectionInfo:
    """An explicit kubeconfig wins; otherwise the in-cluster ServiceAccount; otherwise ~/.kube/config."""
    settings = kopf.OperatorSettings()
    info: kopf.ConnectionInfo | None = None
    if os.environ.get("KUBECONFIG") or not os.path.exists(_SA_TOKEN):
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        info = kopf.login_with_service_account(settings=settings)
    if info is None:
        raise ConfigError("no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG or run in a pod")
    return info
