"""End-to-end fixtures: the chart, the images built here, Prometheus and the models, on the real node.

Everything runs for real on the test cluster's kubelet node (never on KWOK): the session's cluster is the
``control_plane`` fixture of ``tests/helpers/cluster_session.py`` (shared with tests/cluster); its
collection hook builds the Kubernetes binaries and the images before the first test, outside any timeout.
When there is no real node, or the images or the chart cannot be made to run, every test here FAILS with
the reason (never skipped).

Session fixtures (built once, in this order when first asked for):

* ``node`` — :class:`tests.e2e.kube.RealNode`, Ready.
* ``ferryman_images`` — :class:`tests.e2e.release.Images` (runtime and operator references), loaded into the
node.
* ``model_store`` — the sample models (and a deliberately slow one) over HTTP and S3 (moto) from host
  processes bound to NODE_IP; ``model_files`` = {"slow": (path in the store, sha256), ...}.
* ``release`` — ``helm install`` of charts/ferryman with ci/e2e-values.yaml and the local images; the
  operator pod is Available.
* ``prometheus`` — the test Prometheus (Debian's binary, PodMonitor discovery sidecar) in the cluster,
  ready; its host-side URL (the Service's ClusterIP).

Function fixtures: ``models_ns`` — a fresh namespace on the real node with the model store's S3 Secret;
on failure its pods, events and logs are printed; deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cluster.controlplane import ControlPlane
from tests.e2e import kube, promstack
from tests.e2e.modelstore import ModelStore
from tests.e2e.modelstore import model_store as serve_models
from tests.e2e.release import Images, Release, build_images, local_values
from tests.helpers import models

SLOW_SECONDS = 0.3  # the slow model's compute per request, calibrated on this machine (a floor)


@pytest.fixture(scope="session")
def node(control_plane: ControlPlane) -> kube.RealNode:
    try:
        return kube.real_node(control_plane)
    except AssertionError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def ferryman_images(control_plane: ControlPlane, node: kube.RealNode) -> Images:
    try:
        return build_images(control_plane.run_dir)
    except Exception as err:  # the images are the product under test: no image, no e2e (fail, not skip)
        pytest.fail(f"the ferryman images could not be built or loaded: {err}", pytrace=False)


@pytest.fixture(scope="session")
def model_files(sample_models: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The store's directory and the extra models: {"root": (dir, ""), "slow": (rel path, sha256)}."""
    root = tmp_path_factory.mktemp("e2e-models")
    shutil.copytree(Path(sample_models.directory) / "models", root / "models")
    slow = models.slow_model(root / "models" / "slow" / "model.onnx", target_seconds=SLOW_SECONDS)
    sha = hashlib.sha256(slow.read_bytes()).hexdigest()
    return {"root": (root, ""), "slow": (Path("models/slow/model.onnx"), sha)}


@pytest.fixture(scope="session")
def model_store(node: kube.RealNode, model_files: dict[str, tuple[Path, str]]) -> Iterator[ModelStore]:
    with serve_models(model_files["root"][0], host=node.ip) as store:
        yield store


@pytest.fixture(scope="session")
def release(
    control_plane: ControlPlane, ferryman_images: Images, model_store: ModelStore
) -> Iterator[Release]:
    rel = Release(control_plane)
    values = local_values(
        ferryman_images, prometheus_url=promstack.url(), workload_env=model_store.workload_env()
    )
    try:
        rel.install(values)
    except AssertionError as err:
        diag = kube.diagnostics(control_plane, rel.namespace)
        rel.uninstall()
        pytest.fail(f"helm install failed: {err}\n{diag}", pytrace=False)
    try:
        yield rel
    finally:
        if os.environ.get("FERRYMAN_E2E_KEEP"):
            print(f"FERRYMAN_E2E_KEEP: release {rel.name} left in {rel.namespace}")
        else:
            rel.uninstall()


@pytest.fixture(scope="session")
def prometheus(control_plane: ControlPlane, ferryman_images: Images, release: Release) -> Iterator[str]:
    """The test Prometheus, scraping what the chart's PodMonitor selects; yields its URL from the host."""
    cp = control_plane
    try:
        image = promstack.prometheus_image(cp)
    except Exception as err:
        pytest.fail(f"the Prometheus image could not be built or loaded: {err}", pytrace=False)
    kube.wait_not_terminating(cp, promstack.NAMESPACE)
    cp.apply(
        promstack.manifests(
            image=image,
            sd_image=ferryman_images.runtime,
            release=release.base_values.get("monitoring", {}).get("release", "ferryman-e2e"),
        )
    )
    kube.wait_available(cp, promstack.NAMESPACE, promstack.NAME, timeout=180)
    url = f"http://{kube.cluster_ip(cp, promstack.NAMESPACE, promstack.NAME)}:{promstack.PORT}"
    try:
        yield url
    finally:
        if not os.environ.get("FERRYMAN_E2E_KEEP"):
            cp.kubectl(
                "delete", "namespace", promstack.NAMESPACE, "--wait=false", "--ignore-not-found", check=False
            )
            cp.kubectl(
                "delete",
                "clusterrole,clusterrolebinding",
                "-l",
                "app.kubernetes.io/part-of=ferryman-e2e",
                check=False,
            )


@pytest.fixture
def models_ns(
    control_plane: ControlPlane,
    release: Release,
    prometheus: str,
    model_store: ModelStore,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    name = kube.create_namespace(control_plane)
    control_plane.apply(model_store.secret(name))
    try:
        yield name
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(kube.diagnostics(control_plane, name))
            print(kube.diagnostics(control_plane, release.namespace))
        if not os.environ.get("FERRYMAN_E2E_KEEP"):
            kube.delete_namespace(control_plane, name)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def rows(traffic: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(traffic, dtype=np.float32)
