"""The scale benchmark's fixtures: a KWOK-only control plane, the operator's identity, the operator process,
and what the apiserver and /proc say about them.

Everything runs on this machine: ``scripts/cluster/up.sh`` with ``FERRYMAN_REAL_NODE=0`` (fake nodes only:
pods become Running + Ready without a container), one run directory per measurement, torn down after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ferryman import processes
from loadtests import operator_identity

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "cluster"
CRD_FILE = ROOT / "operators" / "ferryman_operator" / "crd" / "modeldeployments.yaml"
SYSTEM_NS = "ferryman-system"
SA = operator_identity.SERVICE_ACCOUNT
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Cluster:
    run_dir: Path
    info: dict[str, str]

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info["KUBECONFIG"])

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        cmd = [
            str(Path(self.info["FERRYMAN_K8S_BIN"]) / "kubectl"),
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
        ]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ferryman-bench",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

    def pid(self, name: str) -> int:
        return int((self.run_dir / "pids" / f"{name}.pid").read_text().strip())


@contextmanager
def cluster(run_dir: Path, *, nodes: int, keep: bool = False) -> Iterator[Cluster]:
    """A fresh control plane with ``nodes`` KWOK nodes and no real node in ``run_dir``; stopped afterwards."""
    env = {**os.environ, "FERRYMAN_REAL_NODE": "0", "FERRYMAN_CLUSTER_NODES": str(nodes)}
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "up.sh"), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/cluster/up.sh failed:\n{proc.stderr[-3000:]}")
    info = dict(
        line.split("=", 1) for line in (run_dir / "cluster.env").read_text().splitlines() if "=" in line
    )
    try:
        yield Cluster(run_dir, info)
    finally:
        if not keep:
            subprocess.run(
                ["bash", str(SCRIPTS / "down.sh"), str(run_dir)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )


def install(c: Cluster, *, namespaces: list[str]) -> Path:
    """The CRD, the namespaces, and the operator's ServiceAccount bound to exactly its rbac.yaml
    (cluster-wide, as the chart does it). Returns the operator's kubeconfig (a token of that
    ServiceAccount)."""
    c.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=ferryman-bench", "-f", str(CRD_FILE)
    )
    c.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.serving.ferryman.dev", "--timeout=60s"
    )
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in [SYSTEM_NS, *namespaces]
    ]
    c.apply(docs)
    c.apply(operator_identity.identity_documents(SYSTEM_NS, cluster_wide=True))
    deadline = time.monotonic() + 60
    while True:
        try:
            c.kubectl("-n", SYSTEM_NS, "get", "serviceaccount", SA)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    token = c.kubectl("-n", SYSTEM_NS, "create", "token", SA, "--duration=6h").strip()
    config = operator_identity.kubeconfig(
        c.kubeconfig, token=token, namespace=SYSTEM_NS, cluster_name="bench"
    )
    return operator_identity.write_private(c.run_dir / "operator.kubeconfig", config)


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(self.health_url, timeout=5).json()
        return doc

    def stop(self) -> None:
        processes.stop(self.process, timeout=30)


def start_operator(
    kubeconfig: Path,
    *,
    port: int,
    log_path: Path,
    source: Path | None = None,
    env: dict[str, str] | None = None,
) -> OperatorProcess:
    """``python -m ferryman_operator`` cluster-wide with default settings; ``source``: another checkout's
    ``operators/`` directory (the operator before a change), first on PYTHONPATH."""
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FERRYMAN_LEASE_NAMESPACE": SYSTEM_NS,
        "FERRYMAN_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "FERRYMAN_IDENTITY": "bench-operator",
        "FERRYMAN_IMAGE": "ferryman.bench/ferryman:dev",
        **(env or {}),
    }
    environment.pop("KUBECONFIG", None)
    if source is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(source), environment.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferryman_operator", "--kubeconfig", str(kubeconfig)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=str(ROOT),
        )
    op = OperatorProcess(process, f"http://127.0.0.1:{port}/healthz", log_path)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if op.health().get("leader", True) is not False:
                return op
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            op.stop()
            raise RuntimeError(f"the operator did not become healthy:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_counters(c: Cluster) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``apiserver_request_total`` and ``apiserver_flowcontrol_dispatched_requests_total`` from the
    apiserver's own /metrics, by label set."""
    wanted = ("apiserver_request_total", "apiserver_flowcontrol_dispatched_requests_total")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {w: {} for w in wanted}
    for line in c.kubectl("get", "--raw", "/metrics").splitlines():
        if not line.startswith(wanted):
            continue
        m = _SAMPLE.match(line)
        if m is None or m["name"] not in out:
            continue
        out[m["name"]][tuple(sorted(_LABEL.findall(m["labels"])))] = float(m["value"])
    return out
