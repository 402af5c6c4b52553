"""One test cluster per pytest session, shared by tests/cluster and tests/e2e (a plugin registered in
tests/conftest.py through ``pytest_plugins``): the machine can run only one real node, and ``make test``
runs both directories in one session.

* ``control_plane`` (session fixture): scripts/cluster/up.sh once (control plane, the real node, KWOK nodes),
  scripts/cluster/down.sh at the end. With FERRYMAN_CLUSTER_RUN_DIR set to the run directory of a cluster
  started with ``make cluster-up``, that cluster is used and left running.
* After collection, outside any test's timeout and with a progress line: when a selected test uses
  ``control_plane``, the cluster's binaries are built if missing (scripts/cluster/build.sh and
  node-build.sh; a cold build takes tens of minutes); when one uses ``ferryman_images`` (tests/e2e), the
  images are built (scripts/images/build.sh; seconds when cached), unless FERRYMAN_E2E_IMAGES_ENV names the
  references file of images already built and loaded (``make images`` writes .cache/images.env). A failed
  build fails the tests that need it, with its log tail, and nothing else. Then, if another session's real
  node is up on this machine (one per machine), the session waits for it to go away
  (FERRYMAN_REAL_NODE_WAIT seconds, 30 min unless set) before the first test.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import (
    REPO_ROOT,
    ControlPlane,
    ControlPlaneError,
    binaries_ready,
    build,
    wait_for_real_node_slot,
)

IMAGES_FIXTURE = "ferryman_images"
IMAGES_SCRIPT = REPO_ROOT / "scripts" / "images" / "build.sh"
E2E_IMAGES = "runtime operator"  # what tests/e2e runs today; ray joins with the KubeRay scenario

build_errors: dict[str, str] = {}  # "cluster" / "images" -> why the build failed


def _uses(session: pytest.Session, fixture: str) -> bool:
    return any(fixture in getattr(item, "fixturenames", ()) for item in session.items)


def _progress(session: pytest.Session, line: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


def build_images(
    run_dir: Path | None = None, *, env_file: Path | None = None, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """``scripts/images/build.sh [RUN_DIR]`` with the images tests/e2e needs (loaded into the node when
    RUN_DIR runs one); the finished process (stdout: the references)."""
    env = {**os.environ, "FERRYMAN_IMAGES": E2E_IMAGES}
    if env_file is not None:
        env["FERRYMAN_IMAGES_ENV"] = str(env_file)
    args = ["bash", str(IMAGES_SCRIPT)] + ([str(run_dir)] if run_dir is not None else [])
    return subprocess.run(
        args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if (
        _uses(session, "control_plane")
        and not os.environ.get("FERRYMAN_CLUSTER_RUN_DIR")
        and not binaries_ready()
    ):
        _progress(
            session, "building the test cluster's binaries (scripts/cluster/build.sh, node-build.sh)..."
        )
        t0 = time.monotonic()
        try:
            build()
        except Exception as exc:  # reported by the control_plane fixture: only the cluster tests fail
            build_errors["cluster"] = str(exc)
        _progress(
            session,
            f"cluster binaries: {'failed' if 'cluster' in build_errors else 'ready'} "
            f"({time.monotonic() - t0:.0f} s)",
        )
    if _uses(session, IMAGES_FIXTURE) and not os.environ.get("FERRYMAN_E2E_IMAGES_ENV"):
        _progress(session, f"building the ferryman images ({E2E_IMAGES}; scripts/images/build.sh)...")
        t0 = time.monotonic()
        try:
            proc = build_images()
            if proc.returncode != 0:
                build_errors["images"] = "\n".join(proc.stderr.splitlines()[-40:])
        except subprocess.TimeoutExpired as exc:
            build_errors["images"] = f"scripts/images/build.sh timed out: {exc}"
        _progress(
            session,
            f"images: {'failed' if 'images' in build_errors else 'ready'} ({time.monotonic() - t0:.0f} s)",
        )
    if _uses(session, "control_plane") and not os.environ.get("FERRYMAN_CLUSTER_RUN_DIR"):
        # on timeout up.sh fails in the fixture, naming the node's owner
        wait_for_real_node_slot(
            float(os.environ.get("FERRYMAN_REAL_NODE_WAIT", "1800")),
            note=lambda line: _progress(session, line),
        )


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    existing = os.environ.get("FERRYMAN_CLUSTER_RUN_DIR")
    if existing:
        yield ControlPlane.attach(existing)
        return
    if "cluster" in build_errors:
        pytest.fail(f"building the test cluster failed: {build_errors['cluster']}", pytrace=False)
    try:
        cp = ControlPlane().start()
    except ControlPlaneError as err:  # no cluster, no cluster tests: they fail with up.sh's reason
        pytest.fail(f"the test cluster did not start: {err}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()
