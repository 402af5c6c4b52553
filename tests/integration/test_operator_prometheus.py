"""The operator's analysis source against a real Prometheus on loopback, scraping ferryman's own metric code
(tests.helpers.exporter): per-version requests, errors and p99 over a window, scoped by namespace; missing
or unreachable Prometheus is "no data", never a pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ferryman.analysis import Outcome, VersionStats, analyze
from ferryman.spec import Budget
from ferryman_operator.prometheus import PrometheusStats
from tests.helpers.exporter import MetricsExporter, Profile
from tests.helpers.ports import free_port
from tests.helpers.prometheus import Prometheus, prometheus, prometheus_binary

pytestmark = pytest.mark.skipif(prometheus_binary() is None, reason="prometheus is not installed")


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[Prometheus, MetricsExporter]]:
    exporter = MetricsExporter().start()
    exporter.serve("m", "v1", Profile(latency_seconds=0.01, per_second=50), route="stable")
    exporter.serve(
        "m", "v2", Profile(latency_seconds=0.2, error_ratio=0.1, client_error_ratio=0.2, per_second=50)
    )
    try:
        with prometheus({"ferryman": [exporter.address]}, namespace="ns-a") as prom:
            # a full 5 s window of samples (six scrapes, one per second) before any test reads it
            prom.wait_for(
                'count_over_time(ferryman_requests_total{version="v2", code="200"}[6s])',
                lambda r: bool(r) and float(r[0]["value"][1]) >= 6,
                timeout=60,
                what="six scrapes",
            )
            yield prom, exporter
    finally:
        exporter.stop()


def stats(url: str, version: str, *, namespace: str = "ns-a", window: float = 5.0) -> VersionStats:
    return asyncio.run(
        PrometheusStats(url).stats(model="m", version=version, namespace=namespace, window_seconds=window)
    )


def test_healthy_version(scraped: tuple[Prometheus, MetricsExporter]) -> None:
    prom, _ = scraped
    s = stats(prom.url, "v1")
    assert s.source == "prometheus" and s.note == ""
    assert s.requests > 50 and s.errors == 0, s
    assert s.p99_seconds is not None and 0.005 < s.p99_seconds <= 0.0125, (
        s
    )  # in the (0.01, 0.0125] bucket or below
    result = analyze(s, budget=Budget(), min_requests=20)
    assert result.outcome == Outcome.passed


def test_slow_failing_version(scraped: tuple[Prometheus, MetricsExporter]) -> None:
    prom, _ = scraped
    s = stats(prom.url, "v2")
    assert s.requests > 50, s
    # 10 % of all requests answer 500 and 20 % answer 400; 400s are the callers' and are not counted
    assert 0.04 < s.error_rate < 0.3, s
    assert s.p99_seconds is not None and 0.15 < s.p99_seconds <= 0.25, s
    result = analyze(s, budget=Budget(p99_ms=100, max_error_rate=0.01), min_requests=20)
    assert result.outcome == Outcome.failed
    assert "p99_latency_ms" in result.reason and "error_rate" in result.reason


def test_other_namespace_has_no_data(scraped: tuple[Prometheus, MetricsExporter]) -> None:
    prom, _ = scraped
    s = stats(prom.url, "v1", namespace="ns-b")
    assert s.requests == 0 and "no requests for m/v1" in s.note
    assert analyze(s, budget=Budget(), min_requests=20).outcome == Outcome.insufficient


def test_unreachable_or_unconfigured_prometheus_is_no_data() -> None:
    down = stats(f"http://127.0.0.1:{free_port()}", "v1")
    assert down.requests == 0 and down.note.startswith("Prometheus unreachable at http://127.0.0.1:")
    result = analyze(down, budget=Budget(), min_requests=0)
    assert result.outcome == Outcome.insufficient and result.reason.startswith(
        "no data: Prometheus unreachable"
    )
    unset = stats("", "v1")
    assert "no Prometheus configured" in unset.note


def test_bad_answer_is_no_data(scraped: tuple[Prometheus, MetricsExporter]) -> None:
    prom, _ = scraped
    broken = asyncio.run(
        PrometheusStats(prom.url, extra_selector="this is not promql").stats(
            model="m", version="v1", namespace="ns-a", window_seconds=5
        )
    )
    assert broken.requests == 0 and broken.note.startswith("Prometheus query failed: HTTP 400")


def test_analyses_due_together_share_one_query_per_metric(
    scraped: tuple[Prometheus, MetricsExporter],
) -> None:
    """Many analyses at once (both versions, another namespace, the same window) cost one query per metric,
    and each gets exactly what it would get alone."""
    prom, _ = scraped

    async def together() -> tuple[list[VersionStats], int]:
        source = PrometheusStats(prom.url)
        asks = [("v1", "ns-a"), ("v2", "ns-a"), ("v1", "ns-b"), ("v1", "ns-a")]
        results = await asyncio.gather(
            *(source.stats(model="m", version=v, namespace=ns, window_seconds=5.0) for v, ns in asks)
        )
        return list(results), source.queries_sent

    (v1, v2, other, v1_again), sent = asyncio.run(together())
    assert sent == 7  # requests, errors, p50, p95, p99, drift, drift time: once each for all four
    assert v1.requests > 50 and v1.errors == 0 and v1.p99_seconds is not None and v1.p99_seconds <= 0.0125, v1
    assert v2.requests > 50 and 0.04 < v2.error_rate < 0.3 and v2.p99_seconds is not None, v2
    assert other.requests == 0 and "no requests for m/v1" in other.note
    assert v1_again == v1
