"""The analysis metrics source on Kubernetes: Prometheus' HTTP API -> :class:`ferryman.analysis.VersionStats`.

For a version's window (since its rollout step began) the operator asks Prometheus for:

* requests: ``sum(increase(ferryman_requests_total{<sel>, code!~"4.."}[W]))`` (a caller's 4xx is not the
  version's fault, as in the gateway's own accounting);
* errors: ``sum(increase(ferryman_requests_total{<sel>, code=~"5.."}[W]))``;
* p99 (and p50, p95): ``histogram_quantile(q, sum by (le) (increase(ferryman_request_duration_seconds_bucket{<sel>}[W])))``;
* drift share: ``max(ferryman_drift_share{<sel>})`` (the latest value, from the drift monitor), and the time
  of that run, ``max(ferryman_drift_last_run_timestamp_seconds{<sel>})``: a run from before the rollout
  started is not counted for it (``ferryman.rollout.own_inputs``).

``<sel>`` is ``model="<name>", version="<version>"``, plus ``<namespace label>="<namespace>"`` (the label
ServiceMonitor/PodMonitor scraping attaches; FERRYMAN_PROMETHEUS_NAMESPACE_LABEL) and any extra matchers
(FERRYMAN_ANALYSIS_SELECTOR). Metric names come from :mod:`ferryman.metrics`.

Missing data never passes: no Prometheus configured, Prometheus unreachable or a failing query give
``requests=0`` with a ``note``, which :func:`ferryman.analysis.analyze` turns into *insufficient* (hold).
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from ferryman.analysis import VersionStats

REQUESTS_TOTAL = "ferryman_requests_total"
DURATION_BUCKET = "ferryman_request_duration_seconds_bucket"
DRIFT_SHARE = "ferryman_drift_share"
DRIFT_LAST_RUN = "ferryman_drift_last_run_timestamp_seconds"
SOURCE = "prometheus"


class QueryError(Exception):
    pass


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(*, model: str, version: str, namespace: str | None, namespace_label: str, extra: str = "") -> str:
    parts = [f"model={_quote(model)}", f"version={_quote(version)}"]
    if namespace_label and namespace:
        parts.append(f"{namespace_label}={_quote(namespace)}")
    if extra.strip():
        parts.append(extra.strip().strip(","))
    return ", ".join(parts)


def queries(sel: str, window_seconds: float) -> dict[str, str]:
    """The PromQL of one analysis (``window_seconds`` rounded up to whole seconds, at least 1)."""
    w = f"{max(math.ceil(window_seconds), 1)}s"
    buckets = f"sum by (le) (increase({DURATION_BUCKET}{{{sel}}}[{w}]))"
    return {
        "requests": f'sum(increase({REQUESTS_TOTAL}{{{sel}, code!~"4.."}}[{w}]))',
        "errors": f'sum(increase({REQUESTS_TOTAL}{{{sel}, code=~"5.."}}[{w}]))',
        "p50": f"histogram_quantile(0.5, {buckets})",
        "p95": f"histogram_quantile(0.95, {buckets})",
        "p99": f"histogram_quantile(0.99, {buckets})",
        "drift": f"max({DRIFT_SHARE}{{{sel}}})",
        "drift_at": f"max({DRIFT_LAST_RUN}{{{sel}}})",  # a run before the rollout started is not its drift
    }


def scalar(doc: Any) -> float | None:
    """The value of an instant-vector answer with at most one series; None for no data or NaN."""
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise QueryError(f"unexpected answer: {str(doc)[:200]}")
    result = doc.get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


class PrometheusStats:
    def __init__(self, url: str, *, namespace_label: str = "namespace", extra_selector: str = "",
                 timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.namespace_label = namespace_label
        self.extra_selector = extra_selector
        self.timeout = timeout

    async def stats(self, *, model: str, version: str, namespace: str | None, window_seconds: float) -> VersionStats:
        if not self.url:
            return VersionStats(version, 0, 0, None, source=SOURCE,
                                note="no Prometheus configured (FERRYMAN_PROMETHEUS_URL is empty)")
        sel = selector(model=model, version=version, namespace=namespace, namespace_label=self.namespace_label,
                       extra=self.extra_selector)
        values: dict[str, float | None] = {}
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
                for name, promql in queries(sel, window_seconds).items():
                    resp = await client.get("/api/v1/query", params={"query": promql})
                    if resp.status_code != 200:
                        raise QueryError(f"HTTP {resp.status_code} for {promql}: {resp.text[:200]}")
                    values[name] = scalar(resp.json())
        except httpx.TransportError as err:
            return VersionStats(version, 0, 0, None, source=SOURCE,
                                note=f"Prometheus unreachable at {self.url}: {type(err).__name__}: {err}")
        except (QueryError, ValueError, KeyError, IndexError) as err:
            return VersionStats(version, 0, 0, None, source=SOURCE, note=f"Prometheus query failed: {err}")
        requests = round(values["requests"] or 0.0)
        errors = min(round(values["errors"] or 0.0), requests)
        note = "" if requests else f"no requests for {model}/{version} in Prometheus over the window"
        return VersionStats(version=version, requests=requests, errors=errors, p99_seconds=values["p99"],
                            p50_seconds=values["p50"], p95_seconds=values["p95"], drift_share=values["drift"],
                            drift_measured_at=values["drift_at"],
                            source=SOURCE, note=note)
