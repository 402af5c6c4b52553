"""The analysis metrics source on Kubernetes: Prometheus' HTTP API -> :class:`ferryman.analysis.VersionStats`.

For a version's window (since its rollout step began) the operator asks Prometheus for:

* requests: ``sum(increase(ferryman_requests_total{<sel>, code!~"4.."}[W]))`` (a caller's 4xx is not the
  version's fault, as in the gateway's own accounting);
* errors: ``sum(increase(ferryman_requests_total{<sel>, code=~"5.."}[W]))``;
* p99 (and p50, p95): ``histogram_quantile(q, sum by (le)
(increase(ferryman_request_duration_seconds_bucket{<sel>}[W])))``;
* drift share: ``max(ferryman_drift_share{<sel>})`` (the latest value, from the drift monitor), and the time
  of that run, ``max(ferryman_drift_last_run_timestamp_seconds{<sel>})``: a run from before the rollout
  started is not counted for it (``ferryman.rollout.own_inputs``).

``<sel>`` is ``model="<name>", version="<version>"``, plus ``<namespace label>="<namespace>"`` (the label
ServiceMonitor/PodMonitor scraping attaches; FERRYMAN_PROMETHEUS_NAMESPACE_LABEL) and any extra matchers
(FERRYMAN_ANALYSIS_SELECTOR). Metric names come from :mod:`ferryman.metrics`.

Batched (issue 22): analyses that fall due together are answered together. :meth:`PrometheusStats.stats`
waits ``batch_delay`` seconds for others, groups the waiting ones by window (whole seconds below a minute,
then coarser: :func:`window_grid`, always rounded *down*, so a window never reaches back before its step
began), and sends each query once per window with ``by (<namespace label>, model, version)``: 1,000
ModelDeployments due at once are 7 queries per distinct window, not 7,000.

Missing data never passes: no Prometheus configured, Prometheus unreachable or a failing query give
``requests=0`` with a ``note``, which :func:`ferryman.analysis.analyze` turns into *insufficient* (hold).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
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


def selector(
    *, model: str, version: str, namespace: str | None, namespace_label: str, extra: str = ""
) -> str:
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


def window_grid(window_seconds: float) -> int:
    """The window a batched query uses: whole seconds (rounded up, as :func:`queries`) below a minute, then
    rounded down to 10 s, 1 min, 10 min as it grows, so analyses due together share few distinct windows."""
    if window_seconds < 60:
        return max(math.ceil(window_seconds), 1)
    step = 10 if window_seconds < 600 else 60 if window_seconds < 3600 else 600
    return int(window_seconds // step * step)


def batch_queries(*, by: tuple[str, ...], extra: str, window: int) -> dict[str, str]:
    """The PromQL of every analysis with this window at once, one series per ``by`` label set."""
    sel = extra.strip().strip(",")
    ok = ", ".join(p for p in (sel, 'code!~"4.."') if p)
    bad = ", ".join(p for p in (sel, 'code=~"5.."') if p)
    grp = ", ".join(by)
    w = f"{window}s"
    buckets = f"sum by (le, {grp}) (increase({DURATION_BUCKET}{{{sel}}}[{w}]))"
    return {
        "requests": f"sum by ({grp}) (increase({REQUESTS_TOTAL}{{{ok}}}[{w}]))",
        "errors": f"sum by ({grp}) (increase({REQUESTS_TOTAL}{{{bad}}}[{w}]))",
        "p50": f"histogram_quantile(0.5, {buckets})",
        "p95": f"histogram_quantile(0.95, {buckets})",
        "p99": f"histogram_quantile(0.99, {buckets})",
        "drift": f"max by ({grp}) ({DRIFT_SHARE}{{{sel}}})",
        "drift_at": f"max by ({grp}) ({DRIFT_LAST_RUN}{{{sel}}})",
    }


def vector(doc: Any, by: Iterable[str]) -> dict[tuple[str, ...], float | None]:
    """An instant-vector answer as {label values in ``by`` order: value (None for NaN/Inf)}."""
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise QueryError(f"unexpected answer: {str(doc)[:200]}")
    labels = tuple(by)
    out: dict[tuple[str, ...], float | None] = {}
    for series in doc.get("data", {}).get("result", []):
        metric = series.get("metric") or {}
        value = float(series["value"][1])
        out[tuple(str(metric.get(k, "")) for k in labels)] = (
            None if math.isnan(value) or math.isinf(value) else value
        )
    return out


def scalar(doc: Any) -> float | None:
    """The value of an instant-vector answer with at most one series; None for no data or NaN."""
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise QueryError(f"unexpected answer: {str(doc)[:200]}")
    result = doc.get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


_Key = tuple[str, str, str]  # (namespace, model, version)


class PrometheusStats:
    def __init__(
        self,
        url: str,
        *,
        namespace_label: str = "namespace",
        extra_selector: str = "",
        timeout: float = 5.0,
        batch_delay: float = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.namespace_label = namespace_label
        self.extra_selector = extra_selector
        self.timeout = timeout
        self.batch_delay = batch_delay
        self.queries_sent = 0
        self._pending: dict[int, dict[_Key, list[asyncio.Future[VersionStats]]]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def stats(
        self, *, model: str, version: str, namespace: str | None, window_seconds: float
    ) -> VersionStats:
        if not self.url:
            return VersionStats(
                version,
                0,
                0,
                None,
                source=SOURCE,
                note="no Prometheus configured (FERRYMAN_PROMETHEUS_URL is empty)",
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[VersionStats] = loop.create_future()
        key = ((namespace or "") if self.namespace_label else "", model, version)
        self._pending.setdefault(window_grid(window_seconds), {}).setdefault(key, []).append(future)
        if self._flush is None:
            self._flush = loop.call_later(self.batch_delay, self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._answer(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, pending: dict[int, dict[_Key, list[asyncio.Future[VersionStats]]]]) -> None:
        by = ((self.namespace_label,) if self.namespace_label else ()) + ("model", "version")
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
            for window, waiters in pending.items():
                try:
                    values = await self._query(client, by=by, window=window)
                except httpx.TransportError as err:
                    self._settle(
                        waiters, f"Prometheus unreachable at {self.url}: {type(err).__name__}: {err}"
                    )
                    continue
                except (QueryError, ValueError, KeyError, IndexError) as err:
                    self._settle(waiters, f"Prometheus query failed: {err}")
                    continue
                for key, futures in waiters.items():
                    label_key = key if self.namespace_label else key[1:]
                    result = self._stats(key, {name: v.get(label_key) for name, v in values.items()})
                    for future in futures:
                        if not future.done():
                            future.set_result(result)

    async def _query(
        self, client: httpx.AsyncClient, *, by: tuple[str, ...], window: int
    ) -> dict[str, dict[tuple[str, ...], float | None]]:
        values = {}
        for name, promql in batch_queries(by=by, extra=self.extra_selector, window=window).items():
            self.queries_sent += 1
            resp = await client.post("/api/v1/query", data={"query": promql})
            if resp.status_code != 200:
                raise QueryError(f"HTTP {resp.status_code} for {promql}: {resp.text[:200]}")
            values[name] = vector(resp.json(), by)
        return values

    @staticmethod
    def _settle(waiters: dict[_Key, list[asyncio.Future[VersionStats]]], note: str) -> None:
        for (_ns, _model, version), futures in waiters.items():
            for future in futures:
                if not future.done():
                    future.set_result(VersionStats(version, 0, 0, None, source=SOURCE, note=note))

    @staticmethod
    def _stats(key: _Key, values: dict[str, float | None]) -> VersionStats:
        _namespace, model, version = key
        requests = round(values["requests"] or 0.0)
        errors = min(round(values["errors"] or 0.0), requests)
        note = "" if requests else f"no requests for {model}/{version} in Prometheus over the window"
        return VersionStats(
            version=version,
            requests=requests,
            errors=errors,
            p99_seconds=values["p99"],
            p50_seconds=values["p50"],
            p95_seconds=values["p95"],
            drift_share=values["drift"],
            drift_measured_at=values["drift_at"],
            source=SOURCE,
            note=note,
        )
