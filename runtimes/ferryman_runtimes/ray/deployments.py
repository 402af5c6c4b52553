"""The Ray Serve deployments: the ingress (our raw ASGI app) and one batched ONNX Runtime deployment per
version.

Both take the ModelDeployment as a plain dict (what ``serveConfigV2`` carries) and load their models
themselves, so nothing large is pickled between processes: the ingress ships each remote request as a
validated numpy feed and gets numpy arrays back. Every replica reports to the metrics declared in
``ferryman.metrics``; with ``PROMETHEUS_MULTIPROC_DIR`` set (the config sets it for the application),
the ingress's ``GET /metrics`` merges the samples of every replica on its node. When the application's
``args`` name a stats hub (the local rollout driver sets ``stats``), every ingress replica also ships its
finished requests to it (:mod:`.stats`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ray import serve

from ferryman import metrics
from ferryman.dataplane import DataPlane, load_versions, repository_for
from ferryman.metrics_exposition import routes as metrics_routes
from ferryman.request_metrics import PrometheusObserver
from ferryman.routing import backend_weights, initial_table
from ferryman.serve_config import ENV_METRICS_DIR, table_from_route_config
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman.telemetry import CompositeObserver, RequestObserver
from ferryman_runtimes.ray.batching import Job, Result, run_batch
from ferryman_runtimes.ray.ingress import RayIngressApp, choose_inline
from ferryman_runtimes.ray.stats import SHIP_INTERVAL_S, StatsShipper, actor_sender

log = logging.getLogger("ferryman.ray")


def _metrics_ready() -> None:
    directory = os.environ.get(ENV_METRICS_DIR)
    if directory:
        os.makedirs(directory, exist_ok=True)


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP entry: KServe v1 + Open Inference Protocol v2 (JSON and binary), routed by the rollout policy."""

    def __init__(
        self,
        deployment: dict[str, Any],
        remotes: dict[str, Any],
        inline_below_ms: float,
        dispatch: dict[str, str] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        _metrics_ready()
        self.md: ModelDeployment = parse_deployment(deployment, source="serve args")
        repo = repository_for(self.md)
        models = [repo.get(self.md.name, v.name) for v in self.md.spec.versions]
        forced = dispatch or {}
        inline = choose_inline([m for m in models if m.version not in forced], below_ms=inline_below_ms)
        inline |= {v for v, mode in forced.items() if mode == "inline"}
        log.info(
            "ingress for %s: in-process %s, remote %s",
            self.md.name,
            sorted(inline),
            sorted(set(remotes) - inline),
        )
        self.metrics = metrics.default()
        budget = self.md.spec.budget
        self.metrics.set_budget(
            self.md.name, p99_seconds=budget.p99_ms / 1000.0, max_error_ratio=budget.max_error_rate
        )
        for m in models:
            self.metrics.set_model_ready(m.name, m.version, True)
        observer: RequestObserver = PrometheusObserver(self.metrics)
        self.shipper: StatsShipper | None = None
        if stats:  # the local rollout driver's hub: exact per-version stats from every replica
            self.shipper = StatsShipper(
                actor_sender(str(stats["actor"]), namespace=str(stats["namespace"])),
                interval=float(stats.get("interval_s", SHIP_INTERVAL_S)),
            )
            observer = CompositeObserver(observer, self.shipper)
        # reconfigure() installs the config's traffic split right after construction
        self.gateway = RayIngressApp(
            DataPlane(repo, limits=self.md.spec.limits),
            initial_table(self.md),
            remotes=remotes,
            inline=inline,
            observer=observer,
            extra_routes=metrics_routes(),
        )
        if self.shipper is not None:
            gw = self.gateway
            self.shipper.counters = lambda: (gw.shadow_requests, gw.shadow_errors, gw.shadow_dropped)
            self.shipper.start()

    def __serve_build_asgi_app__(self) -> RayIngressApp:
        return self.gateway

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """A new traffic split (rollout step, switch, rollback): one atomic table swap, no restart."""
        table = table_from_route_config(self.md, user_config)
        self.gateway.set_table(table)
        shadow = {table.shadow: table.shadow_percent} if table.shadow else None
        self.metrics.set_traffic_weights(self.md.name, backend_weights(table), shadow=shadow)
        log.info("traffic for %s: %s", self.md.name, backend_weights(table))

    def __del__(self) -> None:  # Serve calls it on a graceful replica shutdown: ship the last records
        shipper = getattr(self, "shipper", None)
        if shipper is not None:
            shipper.close(timeout=2.0)


@serve.deployment
class VersionModel:
    """One model version on ONNX Runtime; concurrent requests are stacked into one run by ``@serve.batch``."""

    def __init__(self, deployment: dict[str, Any], version: str) -> None:
        _metrics_ready()
        md = parse_deployment(deployment, source="serve args")
        [self.model] = load_versions(md, versions=[version])
        m = metrics.default()
        m.set_model_ready(self.model.name, version, True)
        self._compute = m.compute_duration.labels(self.model.name, version)
        self._rows = m.batch_rows.labels(self.model.name, version)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batcher: Any = self.infer  # the @serve.batch wrapper carries the setters
        batcher.set_max_batch_size(int(user_config["max_batch_size"]))
        batcher.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def infer(self, jobs: list[Job]) -> list[Result]:
        t0 = time.perf_counter()
        results = run_batch(self.model, jobs)
        self._compute.observe(time.perf_counter() - t0)
        self._rows.observe(sum(j.rows for j in jobs))
        return results
