"""A real Kubernetes cluster for tests, driven through scripts/cluster/*.sh: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK fake nodes on 127.0.0.1, plus one real node
(containerd, kubelet, kube-proxy, CoreDNS on the pod bridge; see docs/cluster.md).

    cp = ControlPlane().start()
    cp.kubectl("get", "nodes")
    cp.stop()

Where pods run is chosen per namespace. With a real node the KWOK nodes carry the taint
``kwok.x-k8s.io/node=fake:NoSchedule``, and the apiserver runs the PodNodeSelector and
PodTolerationRestriction admission plugins, so:

- ``cp.create_namespace(on="kwok")`` (or ``namespace_manifest(name, on="kwok")``): a namespace whose
  pods get ``nodeSelector type=kwok`` and a toleration of that taint. They land on KWOK nodes and
  become Running + Ready without any container starting (any image name will do). The ``namespace``
  fixture of tests/cluster/conftest.py is such a namespace.
- ``cp.create_namespace(on="real")``: a namespace whose pods get ``nodeSelector type=real``: they run
  on the real node (``cp.node_name``), so their images must be in its containerd
  (``cp.import_image(archive)``; ``imagePullPolicy: Never`` or ``IfNotPresent``). A namespace without
  these annotations (what ``kubectl create namespace`` makes) also ends up on the real node, since the
  KWOK nodes are tainted.

Both enforce the ``restricted`` Pod Security level by default (``pod_security=None`` for none).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts" / "cluster"


class ControlPlaneError(RuntimeError):
    pass


Placement = Literal["kwok", "real"]
KWOK_TAINT_KEY = "kwok.x-k8s.io/node"
NODE_SELECTOR_ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
DEFAULT_TOLERATIONS_ANNOTATION = "scheduler.alpha.kubernetes.io/defaultTolerations"


def namespace_manifest(
    name: str, *, on: Placement, pod_security: str | None = "restricted"
) -> dict[str, Any]:
    """A Namespace whose pods are placed on the KWOK nodes (``on="kwok"``) or on the real node
    (``on="real"``) by the PodNodeSelector / PodTolerationRestriction admission plugins."""
    annotations = {NODE_SELECTOR_ANNOTATION: f"type={on}"}
    if on == "kwok":
        annotations[DEFAULT_TOLERATIONS_ANNOTATION] = json.dumps(
            [{"key": KWOK_TAINT_KEY, "operator": "Equal", "value": "fake", "effect": "NoSchedule"}]
        )
    labels = {}
    if pod_security is not None:
        labels = {
            "pod-security.kubernetes.io/enforce": pod_security,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    }


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build(timeout: float = 3600) -> None:
    """Build (or check the cache of) the cluster's binaries: scripts/cluster/build.sh (control
    plane, kubelet, kube-proxy) and scripts/cluster/node-build.sh (containerd, CoreDNS, images)."""
    for script in ("build.sh", "node-build.sh"):
        proc = subprocess.run(
            ["bash", str(SCRIPTS / script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise ControlPlaneError(f"scripts/cluster/{script} failed:\n{_tail(proc.stdout)}")


def binaries_ready() -> bool:
    """True when build.sh and node-build.sh would have little to build (a quick check of the
    cache, without running them)."""
    proc = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1"; echo "${FERRYMAN_K8S_BIN}"; '
            'echo "${FERRYMAN_NODE_CACHE}/containerd-${FERRYMAN_CONTAINERD_VERSION}"; '
            'echo "${FERRYMAN_NODE_CACHE}"; echo "coredns-${FERRYMAN_COREDNS_VERSION}-*/coredns"',
            "env.sh",
            str(SCRIPTS / "env.sh"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    bin_dir, containerd_dir, node_cache, coredns_glob = proc.stdout.split()
    names = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "kwok",
        "kubectl",
        "helm",
    ]
    return (
        all((Path(bin_dir) / n).is_file() for n in names)
        and (Path(bin_dir) / "kwok-stages.yaml").is_file()
        and (Path(containerd_dir) / "containerd").is_file()
        and any(Path(node_cache).glob(coredns_glob))
    )


def real_node_owner() -> str | None:
    """The run directory whose real node is up on this machine (there is one at most), or None."""
    proc = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1/env.sh"; source "$1/node-lib.sh"; [[ -f "${NODE_OWNER}" ]] || exit 0; '
            'owner="$(<"${NODE_OWNER}")"; if node_active "${owner}"; then echo "${owner}"; fi',
            "node-lib",
            str(SCRIPTS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


def wait_for_real_node_slot(timeout: float, *, note: Callable[[str], None] | None = None) -> bool:
    """Wait until no other run directory's real node is up (a test session started while another
    session's cluster runs). True when the slot is free; False after ``timeout`` seconds (up.sh
    then fails with the owner's name). ``note`` is called with a progress line every 30 s."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic()
    while (owner := real_node_owner()) is not None:
        if time.monotonic() >= deadline:
            return False
        if note is not None and time.monotonic() >= next_note:
            note(f"waiting for the real node of {owner} to go away (one per machine)...")
            next_note = time.monotonic() + 30
        time.sleep(2)
    return True


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

    def start(self, timeout: float = 3600, *, real_node: bool = True) -> ControlPlane:
        """Run up.sh in the run directory, with the real node unless ``real_node=False`` (whatever
        FERRYMAN_REAL_NODE says: a node that cannot start fails the start, it is never skipped).
        The real node is one per machine: if another run dir's node is up, up.sh waits up to
        FERRYMAN_REAL_NODE_WAIT seconds (5 min unless set, within a test's timeout; conftest waits
        longer before the tests start) for it to go away, then fails saying whose it is."""
        env = dict(os.environ)
        env["FERRYMAN_REAL_NODE"] = "1" if real_node else "0"
        env.setdefault("FERRYMAN_REAL_NODE_WAIT", "300")
        try:
            proc = subprocess.run(
                ["bash", str(SCRIPTS / "up.sh"), str(self.run_dir)],
                env=env,
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
        """Run down.sh (which checks the real node left no process, mount, bridge, iptables chain
        or cgroup behind) and remove the run directory; ControlPlaneError if down.sh failed."""
        if not self.owned:
            return
        proc = None
        if (self.run_dir / ".ferryman-cluster").exists():
            proc = subprocess.run(
                ["bash", str(SCRIPTS / "down.sh"), str(self.run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=180,
                check=False,
            )
        self._cleanup_tmp()
        if proc is not None and proc.returncode != 0:
            raise ControlPlaneError(
                f"scripts/cluster/down.sh failed (exit {proc.returncode}):\n{_tail(proc.stdout)}"
            )

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

    # -- namespaces and the real node ---------------------------------------------------------

    def create_namespace(
        self,
        name: str | None = None,
        *,
        on: Placement,
        pod_security: str | None = "restricted",
        timeout: float = 60,
    ) -> str:
        """Create a namespace placed ``on`` the KWOK nodes or the real node (see the module
        docstring) and wait for its default ServiceAccount, without which no pod is admitted.
        Returns its name (``t-<random>`` unless given). Delete it with ``delete_namespace``."""
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        self.apply(namespace_manifest(name, on=on, pod_security=pod_security))
        deadline = time.monotonic() + timeout
        while self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"no default ServiceAccount in namespace {name} after {timeout}s")
            time.sleep(0.2)
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    @property
    def node_name(self) -> str:
        """The real node's name; ControlPlaneError when the cluster runs without one."""
        if self.info.get("REAL_NODE") != "1" or "NODE_NAME" not in self.info:
            raise ControlPlaneError(
                f"the cluster in {self.run_dir} has no real node (it was started with FERRYMAN_REAL_NODE=0)"
            )
        return self.info["NODE_NAME"]

    @property
    def node_ip(self) -> str:
        """The real node's IP: the pod bridge's address on this machine."""
        self._require_real_node()
        return self.info["NODE_IP"]

    def _require_real_node(self) -> None:
        self.node_name  # noqa: B018 - the property raises without a real node

    def ctr(
        self, *args: str, input: bytes | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``ctr`` against the real node's containerd, in the ``k8s.io`` namespace kubelet uses."""
        self._require_real_node()
        cmd = [self.info["CTR"], "--address", self.info["CONTAINERD_ADDRESS"], "-n", "k8s.io", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise ControlPlaneError(
                f"ctr {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.decode()}"
            )
        return proc

    def import_image(self, archive: str | os.PathLike[str]) -> None:
        """Import an OCI or Docker image archive into the real node's containerd."""
        self.ctr("images", "import", "--local", str(archive))

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], *extra: str) -> str:
        """Server-side apply a manifest (YAML/JSON text, an object or a list of objects)."""
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        return self.kubectl(
            "apply", "--server-side", "--field-manager=ferryman-tests", "-f", "-", *extra, input=manifest
        ).stdout
