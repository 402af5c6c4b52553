"""Fixtures for tests against the real Kubernetes cluster (see docs/cluster.md).

``control_plane`` (session) comes from the plugin ``tests/helpers/cluster_session.py`` (registered in
tests/conftest.py), shared with tests/e2e: one cluster per session, since the machine runs one real node.
It starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK fake nodes and the real node
with scripts/cluster/up.sh and stops them at the end; FERRYMAN_CLUSTER_RUN_DIR reuses a cluster started with
``make cluster-up`` (left running). If the real node cannot start (not root, another cluster's node active),
up.sh fails and so do the tests, with its reason.

``namespace`` (function): a fresh namespace that enforces the ``restricted`` Pod Security level and
whose pods land on the KWOK nodes (``ControlPlane.create_namespace(on="kwok")``).

``real_namespace`` (function): the same, but its pods run on the real node (``on="real"``).

``crd`` (module): the control plane with the ModelDeployment CRD installed. ``model_url`` (module): the
sample models served over HTTP on loopback. Polling: ``tests.helpers.polling.wait_for``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .controlplane import ControlPlane
from .operator_harness import install_crd, model_files


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.create_namespace(on="kwok")
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


@pytest.fixture
def real_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.create_namespace(on="real")
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> ControlPlane:
    """The cluster with the ModelDeployment CRD installed (idempotent; once per module)."""
    install_crd(control_plane)
    return control_plane


@pytest.fixture(scope="module")
def model_url(sample_models: Any) -> Iterator[str]:
    """The sample models served over HTTP on loopback (the base URL; the operator's pods fetch from it)."""
    with model_files(Path(sample_models.directory)) as url:
        yield url
