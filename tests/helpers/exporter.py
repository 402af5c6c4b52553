"""Fake versions' request metrics, made by ferryman's own metric code, for a real Prometheus to scrape.

:class:`MetricsExporter` feeds :class:`ferryman.request_metrics.PrometheusObserver` (on a private registry)
with
request records of a chosen latency, server-error ratio and client-error ratio per (model, version, route),
at a steady rate, and serves them on ``/metrics`` on loopback (``.address`` = ``host:port``). Used where the
versions do not really run (KWOK pods in tests/cluster) or to drive the Prometheus-based analysis.

    exporter = MetricsExporter().start()
    exporter.serve("m", "v2", Profile(latency_seconds=0.3), route="candidate")
    ...
    exporter.stop()
"""

from __future__ import annotations

import http.server
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from ferryman.metrics import FerrymanMetrics
from ferryman.metrics_exposition import CONTENT_TYPE
from ferryman.request_metrics import PrometheusObserver
from ferryman.telemetry import RequestRecord

HOST = "127.0.0.1"


@dataclass
class Profile:
    latency_seconds: float
    error_ratio: float = 0.0  # answered 500
    client_error_ratio: float = 0.0  # answered 400 (the caller's fault: not counted against the version)
    per_second: float = 40.0


@dataclass
class MetricsExporter:
    """Request metrics of fake versions, produced by ferryman's own metric code, served on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    profiles: dict[tuple[str, str, str], Profile] = field(default_factory=dict)  # (model, version, route)
    address: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.observer = PrometheusObserver(FerrymanMetrics(self.registry))
        self._lock = threading.Lock()

    def serve(self, model: str, version: str, profile: Profile, *, route: str = "candidate") -> None:
        with self._lock:
            self.profiles[(model, version, route)] = profile

    def start(self) -> MetricsExporter:
        registry = self.registry

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.address = f"{HOST}:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True, name="exporter"),
            threading.Thread(target=self._feed, daemon=True, name="exporter-feed"),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def _feed(self) -> None:
        rng = random.Random(7)
        tick = 0.1
        carry: dict[tuple[str, str, str], float] = {}
        while not self._stop.wait(tick):
            with self._lock:
                profiles = dict(self.profiles)
            for (model, version, route), p in profiles.items():
                due = carry.get((model, version, route), 0.0) + p.per_second * tick
                n = int(due)
                carry[(model, version, route)] = due - n
                for _ in range(n):
                    draw = rng.random()
                    code = (
                        500
                        if draw < p.error_ratio
                        else 400
                        if draw < p.error_ratio + p.client_error_ratio
                        else 200
                    )
                    seconds = p.latency_seconds * rng.uniform(0.8, 1.0)
                    self.observer.finished(
                        RequestRecord(
                            model=model,
                            version=version,
                            route=route,
                            protocol="v2",
                            code=code,
                            seconds=seconds,
                        ),
                        None,
                        None,
                    )
