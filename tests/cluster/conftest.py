"""Fixtures for tests against the real Kubernetes cluster (see docs/cluster.md).

``control_plane`` (session): starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
KWOK fake nodes and the real node once per session with scripts/cluster/up.sh and stops them at the
end. Set FERRYMAN_CLUSTER_RUN_DIR to the run directory of a cluster already started with
``make cluster-up`` (scripts/cluster/up.sh) to reuse it instead; it is then left running. If the real
node cannot start (not root, another cluster's node active), up.sh fails and so do the tests, with
its reason.

``namespace`` (function): a fresh namespace that enforces the ``restricted`` Pod Security level and
whose pods land on the KWOK nodes (``ControlPlane.create_namespace(on="kwok")``).

``real_namespace`` (function): the same, but its pods run on the real node (``on="real"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .controlplane import ControlPlane, binaries_ready, build, wait_for_real_node_slot

_THIS_DIR = Path(__file__).resolve().parent
_BUILD_ERROR: Exception | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs when tests of this directory are selected, so the
    first (slow, ~25 min on 2 cores) build is not counted against a single test's timeout; then, if
    another session's real node is up on this machine (one per machine), wait for it to go away
    (FERRYMAN_REAL_NODE_WAIT seconds, 30 min unless set) before the tests start."""
    global _BUILD_ERROR
    if os.environ.get("FERRYMAN_CLUSTER_RUN_DIR") or session.config.option.collectonly:
        return
    wanted = any(_THIS_DIR in Path(str(item.path)).resolve().parents for item in session.items)
    if not wanted:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def note(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    if not binaries_ready():
        note("building the Kubernetes binaries and the real node's parts (scripts/cluster/build.sh, node-build.sh)...")
        try:
            build()
        except Exception as exc:  # reported by the control_plane fixture: only cluster tests error
            _BUILD_ERROR = exc
    # On timeout up.sh fails in the fixture, naming the node's owner.
    wait_for_real_node_slot(float(os.environ.get("FERRYMAN_REAL_NODE_WAIT", "1800")), note=note)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    existing = os.environ.get("FERRYMAN_CLUSTER_RUN_DIR")
    if existing:
        yield ControlPlane.attach(existing)
        return
    if _BUILD_ERROR is not None:
        pytest.fail(f"building the control plane failed: {_BUILD_ERROR}", pytrace=False)
    cp = ControlPlane().start()
    try:
        yield cp
    finally:
        cp.stop()


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
