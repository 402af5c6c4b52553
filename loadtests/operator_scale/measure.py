"""One measurement: N canary ModelDeployments applied at once, watched until every status has a phase and
is Ready, then a quiet window counted by the apiserver.

The benchmark watches (it never polls: polls would be what the apiserver counts) with the operator's own
informer, as cluster-admin, and reads the apiserver's /metrics before and after the quiet window. The
operator's share of the apiserver's requests: by resource for the kinds it touches, and in total through
the API Priority and Fairness flow schema ``service-accounts``, which on a KWOK-only cluster serves the
operator's ServiceAccount alone (the controllers use ``kube-system-service-accounts``, the fake node agent
and this benchmark are ``system:masters``, exempt).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferryman_operator.kube.client import KubeClient
from ferryman_operator.kube.config import connection_info
from ferryman_operator.kube.informer import Informer
from ferryman_operator.kube.kinds import DEPLOYMENT, MODEL_DEPLOYMENT
from loadtests.operator_scale.cluster import (
    Cluster,
    apiserver_counters,
    cpu_seconds,
    install,
    rss_mb,
    start_operator,
)

OPERATOR_RESOURCES = (
    "modeldeployments",
    "deployments",
    "services",
    "configmaps",
    "events",
    "rayservices",
    "inferenceservices",
)
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
SMALL = {"cpu": "100m", "memory": "128Mi"}


@dataclass
class Result:
    n: int
    label: str
    apply_seconds: float = 0.0  # sending the N creates
    phase_seconds: float | None = None  # from the first create until every status has a phase
    deployments_ready_seconds: float | None = None  # ... until every owned Deployment is ready
    reflected_seconds: float | None = None  # ... until every status says Ready
    rss_mb: float = 0.0  # operator RSS when everything was Ready
    rss_idle_mb: float = 0.0  # ... after the quiet window
    cpu_to_ready: float = 0.0  # operator CPU seconds from its start until everything was Ready
    idle_seconds: float = 0.0
    idle_cpu_cores: float = 0.0
    apiserver_idle_cpu_cores: float = 0.0
    idle_writes: int = 0  # writes to the operator's kinds (Lease renewals excluded)
    idle_gets: int = 0
    idle_lists: int = 0
    idle_by_verb: dict[str, int] = field(default_factory=dict)  # resource/verb -> count
    idle_operator_requests: int = 0  # the operator's flow schema, every request (Lease renewals included)
    idle_lease_renewals: int = 0
    idle_reconciles_per_s: float | None = None
    idle_by_flow_schema: dict[str, int] = field(default_factory=dict)
    converge_by_verb: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def manifest(i: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{i:04d}", "namespace": namespace},
        "spec": {
            "runtime": "native",
            # small requests: 1,000 of these (3,000 pods, 450 CPUs requested) fit on 32 KWOK nodes of 32 CPUs
            "versions": [
                {"name": "v1", "uri": f"s3://models/scale/{i}/v1/model.onnx", "resources": SMALL},
                {"name": "v2", "uri": f"s3://models/scale/{i}/v2/model.onnx", "resources": SMALL},
            ],
            "traffic": {"strategy": "canary", "stable": "v1", "candidate": "v2"},
        },
    }


def _delta(
    after: dict[tuple[tuple[str, str], ...], float], before: dict[tuple[tuple[str, str], ...], float]
) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def by_verb(delta: dict[tuple[tuple[str, str], ...], float]) -> Counter[str]:
    out: Counter[str] = Counter()
    for labels, value in delta.items():
        d = dict(labels)
        resource = d.get("resource", "") + (f"/{d['subresource']}" if d.get("subresource") else "")
        if d.get("resource") in (*OPERATOR_RESOURCES, "leases"):
            out[f"{resource} {d.get('verb')}"] += int(value)
    return out


def _ready(dep: dict[str, Any]) -> bool:
    status = dep.get("status") or {}
    want = (dep.get("spec") or {}).get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
        and status.get("availableReplicas", 0) >= want
        and status.get("updatedReplicas", 0) >= want
    )


async def _admin(c: Cluster) -> KubeClient:
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    return KubeClient(connection_info(), retries=8)


async def measure(
    c: Cluster,
    *,
    n: int,
    namespaces: int,
    label: str,
    source: Path | None,
    idle: float,
    settle: float,
    timeout: float,
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Result:
    result = Result(n=n, label=label)
    ns_names = [f"scale-{j}" for j in range(namespaces)]
    kubeconfig = install(c, namespaces=ns_names)
    op = start_operator(
        kubeconfig, port=port, log_path=log_dir / f"operator-{label}-{n}.log", source=source, env=env
    )
    pid = op.process.pid
    admin = await _admin(c)
    phases: set[tuple[str, str]] = set()
    ready_mds: set[tuple[str, str]] = set()
    ready_deps: set[tuple[str, str]] = set()
    marks: dict[str, float] = {}
    t0 = 0.0

    def md_event(_t: str, new: dict[str, Any] | None, _old: dict[str, Any] | None) -> None:
        if new is None:
            return
        key = (new["metadata"]["namespace"], new["metadata"]["name"])
        st = new.get("status") or {}
        if st.get("phase"):
            phases.add(key)
        if any(cd.get("type") == "Ready" and cd.get("status") == "True" for cd in st.get("conditions") or []):
            ready_mds.add(key)
        else:
            ready_mds.discard(key)
        if len(phases) >= n and "phase" not in marks:
            marks["phase"] = time.monotonic()
        if len(ready_mds) >= n and "reflected" not in marks:
            marks["reflected"] = time.monotonic()
            marks["cpu_ready"] = cpu_seconds(pid)
            marks["rss_ready"] = rss_mb(pid)

    def dep_event(_t: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        obj = new or old
        if obj is None:
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if new is not None and _ready(new):
            ready_deps.add(key)
        else:
            ready_deps.discard(key)
        if len(ready_deps) >= 3 * n and "deployments" not in marks:
            marks["deployments"] = time.monotonic()

    watchers = [
        Informer(admin, MODEL_DEPLOYMENT, on_event=md_event),
        Informer(
            admin,
            DEPLOYMENT,
            label_selector="app.kubernetes.io/managed-by=ferryman-operator",
            on_event=dep_event,
        ),
    ]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        await asyncio.gather(*(w.synced.wait() for w in watchers))
        before = apiserver_counters(c)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with sem:
                await admin.create(manifest(i, ns_names[i % namespaces]))

        await asyncio.gather(*(create(i) for i in range(n)))
        result.apply_seconds = round(time.monotonic() - t0, 1)
        while not {"phase", "reflected", "deployments"} <= marks.keys():
            if time.monotonic() - t0 > timeout:
                result.notes.append(
                    f"timed out after {timeout:.0f}s: {len(phases)} phases, {len(ready_deps)} "
                    f"Deployments ready, {len(ready_mds)} Ready"
                )
                break
            await asyncio.sleep(0.2)
        for name, attr in (
            ("phase", "phase_seconds"),
            ("deployments", "deployments_ready_seconds"),
            ("reflected", "reflected_seconds"),
        ):
            if name in marks:
                setattr(result, attr, round(marks[name] - t0, 1))
        result.cpu_to_ready = round(marks.get("cpu_ready", cpu_seconds(pid)), 1)
        result.rss_mb = round(marks.get("rss_ready", rss_mb(pid)), 1)
        converged = apiserver_counters(c)
        result.converge_by_verb = dict(
            by_verb(_delta(converged["apiserver_request_total"], before["apiserver_request_total"]))
        )
        # quiet: let the first analysis of every canary happen (30 s interval), then count a window
        await asyncio.sleep(settle)
        health0, cpu0, api0 = _health(op), cpu_seconds(pid), cpu_seconds(c.pid("kube-apiserver"))
        start = apiserver_counters(c)
        t_idle = time.monotonic()
        await asyncio.sleep(idle)
        end = apiserver_counters(c)
        elapsed = time.monotonic() - t_idle
        cpu1, api1, health1 = cpu_seconds(pid), cpu_seconds(c.pid("kube-apiserver")), _health(op)
        result.idle_seconds = round(elapsed, 1)
        result.idle_cpu_cores = round((cpu1 - cpu0) / elapsed, 3)
        result.apiserver_idle_cpu_cores = round((api1 - api0) / elapsed, 3)
        result.rss_idle_mb = round(rss_mb(pid), 1)
        verbs = by_verb(_delta(end["apiserver_request_total"], start["apiserver_request_total"]))
        result.idle_by_verb = dict(verbs)
        result.idle_writes = sum(
            v for k, v in verbs.items() if k.split()[1] in WRITE_VERBS and not k.startswith("leases")
        )
        result.idle_gets = sum(
            v for k, v in verbs.items() if k.split()[1] == "GET" and not k.startswith("leases")
        )
        result.idle_lists = sum(
            v for k, v in verbs.items() if k.split()[1] == "LIST" and not k.startswith("leases")
        )
        flows = _delta(
            end["apiserver_flowcontrol_dispatched_requests_total"],
            start["apiserver_flowcontrol_dispatched_requests_total"],
        )
        result.idle_operator_requests = int(
            sum(v for k, v in flows.items() if dict(k).get("flow_schema") == "service-accounts")
        )
        result.idle_by_flow_schema = {dict(k).get("flow_schema", "?"): int(v) for k, v in flows.items()}
        if health0 is not None and health1 is not None and "reconciles" in health1:
            result.idle_reconciles_per_s = round((health1["reconciles"] - health0["reconciles"]) / elapsed, 2)
            result.idle_lease_renewals = health1.get("lease_renewals", 0) - health0.get("lease_renewals", 0)
        else:
            result.notes.append("no reconcile or Lease renewal counters on this operator's /healthz")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await admin.close()
        op.stop()
    return result


def _health(op: Any) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = op.health()
        return doc
    except Exception:
        return None
