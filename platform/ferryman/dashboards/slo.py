"""SLO overview: traffic, latency percentiles against the 100 ms budget, errors, budget burn."""

from __future__ import annotations

from ferryman.alerts import SloConfig
from ferryman.dashboards.grafana import RATE, Dashboard, M, Panel, Row, Target, V

REQ = f'ferryman_requests_total{{{V}, route!="shadow"}}'
BUCKET = f'ferryman_request_duration_seconds_bucket{{{V}, route!="shadow"}}'
COUNT = f'ferryman_request_duration_seconds_count{{{V}, route!="shadow"}}'


def _quantile(q: float, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({BUCKET}[{RATE}])))"


def _error_ratio(by: str = "", window: str = RATE) -> str:
    group = f" by ({by})" if by else ""
    return (
        f'1 - sum{group} (rate(ferryman_requests_total{{{V}, route!="shadow", code!~"5.."}}[{window}]))'
        f" / sum{group} (rate({REQ}[{window}]))"
    )


def _burn(window: str, slo: SloConfig) -> str:
    good = f'ferryman_request_duration_seconds_bucket{{{V}, route!="shadow", le="{slo.le}"}}'
    return f"(1 - sum(rate({good}[{window}])) / sum(rate({COUNT}[{window}]))) / {slo.error_budget:g}"


def dashboard(slo: SloConfig | None = None) -> Dashboard:
    slo = slo or SloConfig()
    budget_line = Target(f"max(ferryman_budget_p99_seconds{{{M}}})", "p99 budget")
    latency_thresholds = [
        (None, "green"),
        (slo.latency_seconds * 0.8, "orange"),
        (slo.latency_seconds, "red"),
    ]
    d = Dashboard(
        uid="ferryman-slo",
        title="Ferryman / SLO overview",
        tags=["ferryman", "slo"],
        description=f"Requests, latency against the {slo.latency_seconds * 1000:g} ms p99 budget, "
        "errors and error-budget burn for ferryman model servers.",
    )
    d.add(
        Row("Now"),
        Panel(
            "Requests per second",
            "stat",
            [Target(f"sum(rate({REQ}[{RATE}]))")],
            unit="reqps",
            width=4,
            height=4,
        ),
        Panel(
            "p99 latency",
            "stat",
            [Target(_quantile(0.99))],
            unit="s",
            width=4,
            height=4,
            thresholds=latency_thresholds,
        ),
        Panel(
            "Error ratio (5xx)",
            "stat",
            [Target(_error_ratio())],
            unit="percentunit",
            width=4,
            height=4,
            thresholds=[(None, "green"), (slo.max_error_ratio, "red")],
        ),
        Panel(
            f"Requests within {slo.latency_seconds * 1000:g} ms",
            "stat",
            [
                Target(
                    "sum(rate(ferryman_request_duration_seconds_bucket"
                    f'{{{V}, route!="shadow", le="{slo.le}"}}'
                    f"[{RATE}])) / sum(rate({COUNT}[{RATE}]))"
                )
            ],
            unit="percentunit",
            width=4,
            height=4,
            thresholds=[(None, "red"), (slo.latency_objective, "green")],
        ),
        Panel(
            "Latency budget burn rate (1h)",
            "stat",
            [Target(_burn("1h", slo))],
            unit="x",
            width=4,
            height=4,
            description="How fast the latency error budget is spent: 1 = exactly on budget over 30 days; "
            "14.4 pages.",
            thresholds=[(None, "green"), (1, "orange"), (14.4, "red")],
        ),
        Panel(
            "Versions ready",
            "stat",
            [Target(f"sum(ferryman_model_ready{{{V}}})"), Target(f"count(ferryman_model_ready{{{V}}})")],
            width=4,
            height=4,
            description="Ready versions (first) out of known versions (second).",
        ),
        Row("Traffic"),
        Panel(
            "Requests per second by version and code",
            "timeseries",
            [Target(f"sum by (version, code) (rate({REQ}[{RATE}]))", "{{version}} {{code}}")],
            unit="reqps",
            stack=True,
        ),
        Panel(
            "Requests per second by protocol",
            "timeseries",
            [Target(f"sum by (protocol) (rate({REQ}[{RATE}]))", "{{protocol}}")],
            unit="reqps",
            stack=True,
        ),
        Panel(
            "Requests in flight",
            "timeseries",
            [Target(f"sum by (model) (ferryman_requests_in_flight{{{M}}})", "{{model}}")],
            width=8,
        ),
        Panel(
            "Rows per model call (mean)",
            "timeseries",
            [
                Target(
                    f"sum by (version) (rate(ferryman_batch_rows_sum{{{V}}}[{RATE}])) / "
                    f"sum by (version) (rate(ferryman_batch_rows_count{{{V}}}[{RATE}]))",
                    "{{version}}",
                )
            ],
            width=8,
        ),
        Panel(
            "Error ratio by version",
            "timeseries",
            [Target(_error_ratio("version"), "{{version}}")],
            unit="percentunit",
            width=8,
            min=0,
            thresholds=[(None, "green"), (slo.max_error_ratio, "red")],
        ),
        Row("Latency"),
        Panel(
            "Latency percentiles vs budget",
            "timeseries",
            [
                Target(_quantile(0.5), "p50"),
                Target(_quantile(0.95), "p95"),
                Target(_quantile(0.99), "p99"),
                budget_line,
            ],
            unit="s",
            min=0,
            thresholds=latency_thresholds,
        ),
        Panel(
            "p99 latency by version",
            "timeseries",
            [Target(_quantile(0.99, "le, version"), "{{version}}"), budget_line],
            unit="s",
            min=0,
            thresholds=latency_thresholds,
        ),
        Panel(
            "Model compute p99 by version",
            "timeseries",
            [
                Target(
                    f"histogram_quantile(0.99, sum by (le, version) "
                    f"(rate(ferryman_model_compute_duration_seconds_bucket{{{V}}}[{RATE}])))",
                    "{{version}}",
                )
            ],
            unit="s",
            min=0,
            description="ONNX Runtime time alone; the rest of the end-to-end latency is "
            "decoding, routing and encoding.",
        ),
        Panel(
            "Latency distribution (requests per bucket)",
            "timeseries",
            [Target(f"sum by (le) (rate({BUCKET}[{RATE}]))", "le {{le}}")],
            unit="reqps",
        ),
        Row("Error budget"),
        Panel(
            "Latency budget burn rate",
            "timeseries",
            [Target(_burn(w, slo), w) for w in ("5m", "1h", "6h")],
            unit="x",
            min=0,
            thresholds=[(None, "green"), (6, "orange"), (14.4, "red")],
            description=(
                "Multi-window burn rates (as alerted): page at 14.4x over 1h and 5m, or 6x over 6h and 30m."
            ),
        ),
        Panel(
            "Slow requests ratio (budget spent)",
            "timeseries",
            [
                Target(
                    f'1 - sum(rate(ferryman_request_duration_seconds_bucket{{{V}, route!="shadow", '
                    f'le="{slo.le}"}}[{RATE}])) / sum(rate({COUNT}[{RATE}]))',
                    "slow",
                )
            ],
            unit="percentunit",
            min=0,
            thresholds=[(None, "green"), (slo.error_budget, "red")],
        ),
    )
    return d
