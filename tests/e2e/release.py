"""The chart installed with ``helm`` on the test cluster, with the images built here.

* :class:`Images` — the references ``scripts/images/build.sh`` built and loaded (``.cache/images.env``).
* :func:`build_images` — run ``scripts/images/build.sh RUN_DIR`` (cached by content: seconds when nothing
  changed; the session's collection hook built them already) and load them into the node; the references.
* :class:`Release` — ``helm install`` of ``charts/ferryman`` with ``ci/e2e-values.yaml`` plus the local
  images, the test Prometheus and the model store's S3 settings; ``.upgrade(values)``, ``.uninstall()``,
  ``.operator_pods()``, ``.lease()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import REPO_ROOT, ControlPlane
from tests.e2e.kube import wait_available, wait_not_terminating
from tests.helpers import cluster_session

CHART = REPO_ROOT / "charts" / "ferryman"
E2E_VALUES = CHART / "ci" / "e2e-values.yaml"
RELEASE = "ferryman-e2e"  # not "ferryman": tests/cluster applies a ClusterRole of that name
NAMESPACE = "ferryman-e2e"


@dataclass(frozen=True)
class Images:
    runtime: str
    operator: str

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        repo, _, tag = ref.rpartition(":")
        return repo, tag


def _read_env(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def build_images(run_dir: Path) -> Images:
    """``scripts/images/build.sh RUN_DIR``: builds what is missing (nothing, after the session's collection
    hook) and loads the images into the node; raises with the log tail on failure."""
    prebuilt = os.environ.get("FERRYMAN_E2E_IMAGES_ENV")
    if prebuilt:  # iterating on the tests: images make images built and loaded already
        values = _read_env(Path(prebuilt))
        return Images(
            runtime=values["FERRYMAN_LOCAL_IMAGE"], operator=values["FERRYMAN_LOCAL_OPERATOR_IMAGE"]
        )
    if "images" in cluster_session.build_errors:
        raise RuntimeError(f"scripts/images/build.sh failed:\n{cluster_session.build_errors['images']}")
    env_file = Path(tempfile.mkstemp(prefix="ferryman-images-", suffix=".env")[1])
    try:
        proc = cluster_session.build_images(run_dir, env_file=env_file)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.splitlines()[-40:])
            raise RuntimeError(f"scripts/images/build.sh failed (exit {proc.returncode}):\n{tail}")
        values = _read_env(env_file)
    finally:
        env_file.unlink(missing_ok=True)
    if not values.get("FERRYMAN_LOCAL_IMAGES_LOADED"):
        raise RuntimeError(
            "scripts/images/build.sh built the images but did not load them into the node:\n"
            + "\n".join(proc.stderr.splitlines()[-10:])
        )
    return Images(runtime=values["FERRYMAN_LOCAL_IMAGE"], operator=values["FERRYMAN_LOCAL_OPERATOR_IMAGE"])


def local_values(
    images: Images, *, prometheus_url: str, workload_env: list[dict[str, Any]]
) -> dict[str, Any]:
    """The values a person trying the chart on the test cluster sets (docs/helm.md), as one document."""
    repo, tag = Images.split(images.operator)
    return {
        "image": {"repository": repo, "tag": tag},
        "workloads": {"image": images.runtime, "env": workload_env},
        "loadtest": {"image": images.runtime},
        "prometheus": {"url": prometheus_url},
    }


class Release:
    def __init__(self, cp: ControlPlane, *, name: str = RELEASE, namespace: str = NAMESPACE) -> None:
        self.cp = cp
        self.name = name
        self.namespace = namespace
        self._values_dir = Path(tempfile.mkdtemp(prefix="ferryman-e2e-values-"))
        self.revision = 0

    def helm(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.cp.env()
        cache = self._values_dir / "helm"
        env.update(
            HELM_CACHE_HOME=str(cache / "cache"),
            HELM_CONFIG_HOME=str(cache / "config"),
            HELM_DATA_HOME=str(cache / "data"),
        )
        proc = subprocess.run(
            [str(self.cp.bin("helm")), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
        return proc

    def _values_file(self, values: dict[str, Any]) -> Path:
        self.revision += 1
        path = self._values_dir / f"values-{self.revision}.json"
        path.write_text(json.dumps(values))  # JSON is YAML: exact types
        return path

    def install(self, values: dict[str, Any]) -> Release:
        wait_not_terminating(self.cp, self.namespace)
        self.cp.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": self.namespace,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        )
        self.helm(
            "install",
            self.name,
            str(CHART),
            "-n",
            self.namespace,
            "-f",
            str(E2E_VALUES),
            "-f",
            str(self._values_file(values)),
            "--wait",
            "--timeout",
            "5m",
        )
        self.base_values = values
        wait_available(self.cp, self.namespace, self.operator_deployment(), timeout=180)
        return self

    def upgrade(self, values: dict[str, Any]) -> None:
        """``helm upgrade`` with the install's values plus ``values`` (later files win, maps merge)."""
        self.helm(
            "upgrade",
            self.name,
            str(CHART),
            "-n",
            self.namespace,
            "-f",
            str(E2E_VALUES),
            "-f",
            str(self._values_file(self.base_values)),
            "-f",
            str(self._values_file(values)),
        )

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "2m", check=False)

    def helm_revision(self) -> int:
        doc = json.loads(self.helm("status", self.name, "-n", self.namespace, "-o", "json").stdout)
        return int(doc["version"])

    def operator_deployment(self) -> str:
        items = self.cp.get_json(
            "-n", self.namespace, "deployments", "-l", "app.kubernetes.io/component=operator"
        )["items"]
        assert len(items) == 1, [d["metadata"]["name"] for d in items]
        name: str = items[0]["metadata"]["name"]
        return name

    def operator_pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cp.get_json(
            "-n", self.namespace, "pods", "-l", "app.kubernetes.io/component=operator"
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def lease(self) -> dict[str, Any]:
        items = self.cp.get_json("-n", self.namespace, "leases")["items"]
        assert len(items) == 1, [lease["metadata"]["name"] for lease in items]
        lease: dict[str, Any] = items[0]
        return lease
