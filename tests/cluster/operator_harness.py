"""Helpers for the operator's cluster tests (tests/cluster/test_operator_*.py).

* :func:`install_crd` — apply the committed ModelDeployment CRD and wait until it is Established.
* :func:`operator_kubeconfig` — a ServiceAccount in the namespace bound to exactly the rules of
  ``operators/ferryman_operator/rbac.yaml``, and a kubeconfig with its token: the operator runs with the
  least privileges the chart gives it, so a missing RBAC rule fails the tests.
* :func:`start_operator` — ``python -m ferryman_operator --kubeconfig K -n NS`` as a real subprocess with
short
  intervals; waits for its liveness endpoint; :class:`OperatorProcess` (``.health()``, ``.logs()``,
  ``.stop()``, ``.kill()``).
* :class:`ModelFiles` — the sample models served over HTTP on loopback (what the model-URI check asks).
* ``tests.helpers.exporter.MetricsExporter`` (re-exported) — ``ferryman_*`` metrics for fake versions, for a
  real Prometheus to scrape (the pods are KWOK fakes and serve nothing).
* :func:`wait_for` — poll until a function returns something truthy (bounded).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferryman import processes
from loadtests import operator_identity
from tests.cluster.controlplane import REPO_ROOT, ControlPlane
from tests.helpers.exporter import MetricsExporter, Profile
from tests.helpers.polling import wait_for
from tests.helpers.ports import free_port

__all__ = ["MetricsExporter", "Profile", "wait_for"]  # re-exported for the operator tests

CRD_FILE = REPO_ROOT / "operators" / "ferryman_operator" / "crd" / "modeldeployments.yaml"
CRD_NAME = "modeldeployments.serving.ferryman.dev"
SA = operator_identity.SERVICE_ACCOUNT
HOST = "127.0.0.1"


# -- CRD and RBAC -------------------------------------------------------------------------------------
def install_crd(cp: ControlPlane, path: Path = CRD_FILE) -> None:
    cp.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=ferryman-tests", "-f", str(path)
    )
    cp.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def operator_kubeconfig(cp: ControlPlane, namespace: str, directory: Path) -> Path:
    """ServiceAccount + the chart's RBAC (ClusterRole bound by a RoleBinding, Lease Role) + token
    kubeconfig."""
    cp.apply(operator_identity.identity_documents(namespace, cluster_wide=False))
    token = cp.kubectl("-n", namespace, "create", "token", SA, "--duration=2h").stdout.strip()
    config = operator_identity.kubeconfig(
        cp.kubeconfig, token=token, namespace=namespace, cluster_name="test"
    )
    return operator_identity.write_private(directory / f"{namespace}-operator.kubeconfig", config)


# -- the operator process -----------------------------------------------------------------------------
@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    identity: str
    health_url: str
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        resp = httpx.get(self.health_url, timeout=5)
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def stop(self, *, timeout: float = 20.0) -> int:
        return processes.stop(self.process, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, the lease is not released (a crashed or partitioned replica)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)


@contextlib.contextmanager
def start_operator(
    cp: ControlPlane,
    namespace: str,
    *,
    kubeconfig: Path,
    identity: str,
    env: dict[str, str] | None = None,
    wait_leader: bool = True,
) -> Iterator[OperatorProcess]:
    port = free_port()
    log_fd, log_name = tempfile.mkstemp(prefix=f"ferryman-operator-{identity}-", suffix=".log")
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FERRYMAN_RESYNC_SECONDS": "3600",  # reconciles come from watch events and timers, not from this
        "FERRYMAN_PREFLIGHT_TTL_SECONDS": "1",
        "FERRYMAN_LEASE_NAMESPACE": namespace,
        "FERRYMAN_LEASE_SECONDS": "3",
        "FERRYMAN_HEALTH_ADDRESS": f"{HOST}:{port}",
        "FERRYMAN_IDENTITY": identity,
        "FERRYMAN_IMAGE": "ferryman.test/ferryman:dev",
        **(env or {}),
    }
    environment.pop("KUBECONFIG", None)
    with os.fdopen(log_fd, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferryman_operator", "--kubeconfig", str(kubeconfig), "-n", namespace],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=str(REPO_ROOT),
        )
    op = OperatorProcess(
        process=process,
        identity=identity,
        health_url=f"http://{HOST}:{port}/healthz",
        log_path=Path(log_name),
    )
    try:

        def healthy() -> bool:
            if not op.alive():
                raise AssertionError(f"operator {identity} exited ({process.returncode}):\n{op.logs()}")
            doc = op.health()
            return bool(doc.get("leader")) if wait_leader else True

        try:
            wait_for(healthy, timeout=60, what=f"operator {identity} to be healthy")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- operator log ---\n{op.logs()[-5000:]}") from err
        yield op
    finally:
        op.stop()
        if os.environ.get("FERRYMAN_KEEP_OPERATOR_LOGS"):
            print(f"operator {identity} log: {op.log_path}")
        else:
            op.log_path.unlink(missing_ok=True)


# -- model files over HTTP ----------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def model_files(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on loopback; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="model-files")
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- reading resources --------------------------------------------------------------------------------
def get_md(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = cp.get_json("-n", namespace, "modeldeployment", name)
    return doc


def conditions(md: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (md.get("status") or {}).get("conditions") or []}


def condition_is(
    cp: ControlPlane, namespace: str, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any] | None:
    md = get_md(cp, namespace, name)
    c = conditions(md).get(type_)
    if c and c["status"] == status and (reason is None or c.get("reason") == reason):
        return md
    return None


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cp.get_json(
        "-n",
        namespace,
        "events",
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )["items"]
    return sorted(items, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["creationTimestamp"]))


def routes_of(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    cm = cp.get_json("-n", namespace, "configmap", f"{name}-routes")
    doc: dict[str, Any] = json.loads(cm["data"]["routes.json"])
    return doc


def sample_manifest(spec_path: Path, *, name: str, base_url: str, **spec_changes: Any) -> dict[str, Any]:
    """The sample deployment.yaml with its model URIs served over HTTP (relative paths mean nothing in a
    pod) and the given top-level spec fields replaced."""
    doc: dict[str, Any] = yaml.safe_load(spec_path.read_text())
    doc["metadata"] = {"name": name}
    for v in doc["spec"]["versions"]:
        v["uri"] = f"{base_url}/{v['uri']}"
        if "referenceData" in v:
            v["referenceData"] = f"{base_url}/{v['referenceData']}"
    doc["spec"].update(spec_changes)
    return doc
