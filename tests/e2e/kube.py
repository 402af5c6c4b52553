"""The real node and the objects on it, for the end-to-end tests (see tests/e2e/conftest.py).

* :class:`RealNode` — the kubelet node ``scripts/cluster/up.sh`` starts (NODE_NAME, NODE_IP, CTR and
  CONTAINERD_ADDRESS from ``cluster.env``); :func:`real_node` fails with the reason when there is none or it
  is not Ready (never a skip).
* :func:`wait_for` — poll a function until it returns something truthy (bounded, the last value in the error).
* :func:`rollout_status`, :func:`pods`, :func:`diagnostics` — Deployments, pods and, when something times
  out, what a person would look at (pod phases, container states, events, the last log lines).
* :func:`create_namespace` — a namespace on the real node enforcing Pod Security ``restricted``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.cluster.controlplane import ControlPlane
from tests.helpers import polling

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class E2EError(AssertionError):
    pass


def wait_for(
    fn: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 1.0,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """``tests.helpers.polling.wait_for`` at the pace of kubectl calls (one a second unless told)."""
    return polling.wait_for(fn, timeout=timeout, interval=interval, what=what, on_timeout=on_timeout)


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str
    ctr: str
    containerd_address: str

    def ctr_cmd(self, *args: str) -> list[str]:
        """``ctr`` against the node's containerd, in the kubelet's ``k8s.io`` namespace."""
        return [self.ctr, "--address", self.containerd_address, "--namespace", "k8s.io", *args]


def _is_kwok(node: dict[str, Any]) -> bool:
    return KWOK_ANNOTATION in (node["metadata"].get("annotations") or {})


def _ready(node: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", [])
    )


def real_node(cp: ControlPlane, *, timeout: float = 120) -> RealNode:
    """The cluster's real (kubelet) node, Ready; raises E2EError saying what is missing otherwise."""
    missing = [k for k in ("NODE_NAME", "NODE_IP", "CTR", "CONTAINERD_ADDRESS") if not cp.info.get(k)]
    if cp.info.get("REAL_NODE") != "1" or missing:
        raise E2EError(
            f"the test cluster has no real node (REAL_NODE={cp.info.get('REAL_NODE')!r}, missing: "
            f"{', '.join(missing) or '-'} in {cp.run_dir / 'cluster.env'}); scripts/cluster/up.sh "
            f"starts one unless FERRYMAN_REAL_NODE=0 (docs/cluster.md)"
        )
    name = cp.info["NODE_NAME"]

    def ready() -> bool:
        node = cp.get_json("node", name)
        if _is_kwok(node):
            raise E2EError(f"node {name} is a KWOK node, not a kubelet")
        return _ready(node)

    wait_for(
        ready,
        timeout=timeout,
        interval=1,
        what=f"node {name} to be Ready",
        on_timeout=lambda: cp.kubectl("describe", "node", name, check=False).stdout[-4000:],
    )
    return RealNode(
        name=name, ip=cp.info["NODE_IP"], ctr=cp.info["CTR"], containerd_address=cp.info["CONTAINERD_ADDRESS"]
    )


def create_namespace(cp: ControlPlane, prefix: str = "e2e") -> str:
    """A fresh namespace (restricted Pod Security) whose pods run on the real node."""
    return cp.create_namespace(f"{prefix}-{uuid.uuid4().hex[:8]}", on="real")


def wait_not_terminating(cp: ControlPlane, name: str, *, timeout: float = 180) -> None:
    """Wait until namespace ``name`` is not being deleted (an earlier session's teardown deletes without
    waiting; objects applied into a terminating namespace vanish with it)."""

    def settled() -> bool:
        proc = cp.kubectl("get", "namespace", name, "-o", "json", check=False)
        return proc.returncode != 0 or json.loads(proc.stdout)["status"].get("phase") != "Terminating"

    wait_for(settled, timeout=timeout, interval=1, what=f"namespace {name} to finish terminating")


def delete_namespace(cp: ControlPlane, name: str, *, wait: bool = False) -> None:
    cp.kubectl(
        "delete",
        "namespace",
        name,
        f"--wait={str(wait).lower()}",
        "--ignore-not-found",
        check=False,
        timeout=180,
    )


def pods(cp: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cp.get_json("-n", namespace, "pods", "-l", selector)["items"]
    return items


def pod_ready(pod: dict[str, Any]) -> bool:
    return pod.get("metadata", {}).get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def deployment_available(cp: ControlPlane, namespace: str, name: str) -> bool:
    proc = cp.kubectl("-n", namespace, "get", "deployment", name, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    d = json.loads(proc.stdout)
    want = d["spec"].get("replicas", 1)
    st = d.get("status", {})
    return (
        st.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and st.get("updatedReplicas", 0) == want
        and st.get("availableReplicas", 0) == want
        and st.get("replicas", 0) == want
    )


def diagnostics(cp: ControlPlane, namespace: str, *, log_lines: int = 40) -> str:
    """Pods (phase, node, container states), recent events and each container's last log lines."""
    out = [
        f"--- pods in {namespace} ---",
        cp.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout,
    ]
    proc = cp.kubectl("-n", namespace, "get", "pods", "-o", "json", check=False)
    items = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
    for pod in items:
        pname = pod["metadata"]["name"]
        for cs in pod.get("status", {}).get("containerStatuses", []) or []:
            out.append(
                f"{pname}/{cs['name']}: ready={cs.get('ready')} restarts={cs.get('restartCount')} "
                f"state={json.dumps(cs.get('state'))} last={json.dumps(cs.get('lastState'))}"
            )
            logs = cp.kubectl(
                "-n", namespace, "logs", pname, "-c", cs["name"], f"--tail={log_lines}", check=False
            ).stdout
            if logs.strip():
                out.append(f"--- logs {pname}/{cs['name']} ---\n{logs}")
    events = cp.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
    out.append(f"--- events in {namespace} ---\n" + "\n".join(events.splitlines()[-30:]))
    return "\n".join(out)


def wait_available(cp: ControlPlane, namespace: str, name: str, *, timeout: float = 300) -> None:
    wait_for(
        lambda: deployment_available(cp, namespace, name),
        timeout=timeout,
        interval=1,
        what=f"deployment {namespace}/{name} to be available",
        on_timeout=lambda: diagnostics(cp, namespace),
    )


def cluster_ip(cp: ControlPlane, namespace: str, service: str) -> str:
    ip: str = cp.get_json("-n", namespace, "service", service)["spec"]["clusterIP"]
    return ip
