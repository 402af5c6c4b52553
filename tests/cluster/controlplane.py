"""A real Kubernetes control plane for tests (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK fake nodes on 127.0.0.1), driven through scripts/cluster/*.sh.

    cp = ControlPlane().start()
    cp.kubectl("get", "nodes")
    cp.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts" / "cluster"


class ControlPlaneError(RuntimeError):
    pass


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build(timeout: float = 3600) -> None:
    """Build (or check the cache of) the control plane binaries: scripts/cluster/build.sh."""
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "build.sh")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"scripts/cluster/build.sh failed:\n{_tail(proc.stdout)}")


def binaries_ready() -> bool:
    """True when build.sh would have nothing to build (a quick check, without running it)."""
    proc = subprocess.run(
        ["bash", "-c", 'source "$1"; echo "${FERRYMAN_K8S_BIN}"', "env.sh", str(SCRIPTS / "env.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    bin_dir = Path(proc.stdout.strip())
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "helm"]
    return all((bin_dir / n).is_file() for n in names) and (bin_dir / "kwok-stages.yaml").is_file()


class ControlPlane:
    """One control plane in a run directory.

    ``ControlPlane()`` makes a fresh temporary run directory and owns it: ``stop()`` stops the
    processes and removes it. ``ControlPlane.attach(run_dir)`` uses a cluster already started with
    ``scripts/cluster/up.sh run_dir`` (e.g. ``make cluster-up``) and never stops it.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None) -> None:
        if run_dir is None:
            self._tmp: Path | None = Path(tempfile.mkdtemp(prefix="ferryman-cluster-"))
            self.run_dir = self._tmp / "run"
        else:
            self._tmp = None
            self.run_dir = Path(run_dir).resolve()
        self.owned = True
        self.info: dict[str, str] = {}
        self.up_log = ""

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str]) -> ControlPlane:
        cp = cls(run_dir)
        cp.owned = False
        cp._load_info()
        cp.kubectl("get", "--raw=/readyz")
        return cp

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 3600) -> ControlPlane:
        try:
            proc = subprocess.run(
                ["bash", str(SCRIPTS / "up.sh"), str(self.run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise ControlPlaneError(f"scripts/cluster/up.sh timed out after {timeout}s") from exc
        self.up_log = proc.stdout
        if proc.returncode != 0:
            self._cleanup_tmp()
            raise ControlPlaneError(
                f"scripts/cluster/up.sh failed (exit {proc.returncode}):\n{_tail(proc.stdout)}"
            )
        self._load_info()
        return self

    def stop(self) -> None:
        if not self.owned:
            return
        if (self.run_dir / ".ferryman-cluster").exists():
            subprocess.run(
                ["bash", str(SCRIPTS / "down.sh"), str(self.run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                check=False,
            )
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load_info(self) -> None:
        env_file = self.run_dir / "cluster.env"
        if not env_file.is_file():
            raise ControlPlaneError(f"{env_file} not found: is a control plane running in {self.run_dir}?")
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                self.info[key.strip()] = value.strip()

    # -- accessors ----------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info["KUBECONFIG"])

    @property
    def bin_dir(self) -> Path:
        return Path(self.info["FERRYMAN_K8S_BIN"])

    @property
    def version(self) -> str:
        """The Kubernetes version that was built, e.g. ``v1.36.3``."""
        return self.info["FERRYMAN_K8S_VERSION"]

    @property
    def server(self) -> str:
        return self.info["APISERVER_URL"]

    def bin(self, name: str) -> Path:
        """Path of a cached binary: kubectl, helm, kwok, kube-apiserver, etcd, ..."""
        path = self.bin_dir / name
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the cached binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- kubectl ------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster. With check=True a failure raises ControlPlaneError
        carrying stderr; with check=False the CompletedProcess is returned as is."""
        cmd = [str(self.bin("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
            )
        return proc

    def get_json(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], *extra: str) -> str:
        """Server-side apply a manifest (YAML/JSON text, an object or a list of objects)."""
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        return self.kubectl(
            "apply", "--server-side", "--field-manager=ferryman-tests", "-f", "-", *extra, input=manifest
        ).stdout
