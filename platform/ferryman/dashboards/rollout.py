"""Rollout: traffic weights over time, canary vs stable latency and errors, phase and analysis decisions."""

from __future__ import annotations

from ferryman.alerts import SloConfig
from ferryman.dashboards.grafana import RATE, Annotation, Dashboard, M, Panel, Row, Target, V

ROUTES = 'route!="shadow"'


def dashboard(slo: SloConfig | None = None) -> Dashboard:
    slo = slo or SloConfig()
    budget = Target(f"max(ferryman_budget_p99_seconds{{{M}}})", "p99 budget")
    d = Dashboard(
        uid="ferryman-rollout",
        title="Ferryman / Rollout",
        tags=["ferryman", "rollout"],
        description="Progressive delivery: traffic split, the candidate against stable, and every "
        "analysis decision of the rollout controller.",
    )
    d.annotations.append(
        Annotation(
            "Rollout decisions",
            "sum by (model, version, outcome) "
            f'(increase(ferryman_rollout_analysis_total{{{M}, outcome!="hold"}}[1m])) > 0',
            title="{{outcome}} {{version}}",
            text="rollout of {{model}}: {{outcome}} {{version}}",
        )
    )
    d.add(
        Row("State"),
        Panel(
            "Traffic weight by version",
            "timeseries",
            [Target(f"max by (version) (ferryman_traffic_weight_ratio{{{V}}})", "{{version}}")],
            unit="percentunit",
            min=0,
            max=1,
            stack=True,
            width=12,
        ),
        Panel(
            "Rollout phase",
            "state-timeline",
            [Target(f"max by (phase) (ferryman_rollout_phase{{{M}}})", "{{phase}}")],
            width=12,
            description="1 while the rollout is in that phase.",
        ),
        Panel(
            "Canary step",
            "stat",
            [Target(f"max(ferryman_rollout_step{{{M}}}) + 1"), Target(f"max(ferryman_rollout_steps{{{M}}})")],
            width=6,
            height=4,
            description="Current step (first) out of the canary's steps (second).",
        ),
        Panel(
            "Shadow mirror ratio",
            "stat",
            [Target(f"max by (version) (ferryman_traffic_shadow_ratio{{{V}}})", "{{version}}")],
            unit="percentunit",
            width=6,
            height=4,
        ),
        Panel(
            "Analysis decisions (total)",
            "stat",
            [Target(f"sum by (outcome) (ferryman_rollout_analysis_total{{{V}}})", "{{outcome}}")],
            width=12,
            height=4,
        ),
        Row("Candidate vs stable"),
        Panel(
            "p99 latency by route",
            "timeseries",
            [
                Target(
                    "histogram_quantile(0.99, sum by (le, route) "
                    "(rate(ferryman_request_duration_seconds_bucket"
                    f"{{{V}, {ROUTES}}}[{RATE}])))",
                    "{{route}}",
                ),
                budget,
            ],
            unit="s",
            min=0,
            thresholds=[(None, "green"), (slo.latency_seconds, "red")],
        ),
        Panel(
            "Error ratio by route",
            "timeseries",
            [
                Target(
                    "1 - sum by (route) "
                    f'(rate(ferryman_requests_total{{{V}, {ROUTES}, code!~"5.."}}[{RATE}]))'
                    f" / sum by (route) (rate(ferryman_requests_total{{{V}, {ROUTES}}}[{RATE}]))",
                    "{{route}}",
                )
            ],
            unit="percentunit",
            min=0,
            thresholds=[(None, "green"), (slo.max_error_ratio, "red")],
        ),
        Panel(
            "Requests per second by route and version",
            "timeseries",
            [
                Target(
                    f"sum by (route, version) (rate(ferryman_requests_total{{{V}}}[{RATE}]))",
                    "{{route}} ({{version}})",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "p99 latency by version",
            "timeseries",
            [
                Target(
                    "histogram_quantile(0.99, sum by (le, version) "
                    "(rate(ferryman_request_duration_seconds_bucket"
                    f"{{{V}, {ROUTES}}}[{RATE}])))",
                    "{{version}}",
                ),
                budget,
            ],
            unit="s",
            min=0,
        ),
        Row("Analysis"),
        Panel(
            "Analysis decisions",
            "timeseries",
            [
                Target(
                    f"sum by (version, outcome) (increase(ferryman_rollout_analysis_total{{{V}}}[{RATE}]))",
                    "{{version}} {{outcome}}",
                )
            ],
            options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]}},
        ),
        Panel(
            "p99 seen by the analysis vs budget",
            "timeseries",
            [
                Target(f"max by (version) (ferryman_rollout_analysis_p99_seconds{{{V}}})", "{{version}}"),
                budget,
            ],
            unit="s",
            min=0,
        ),
        Panel(
            "Error ratio seen by the analysis",
            "timeseries",
            [
                Target(f"max by (version) (ferryman_rollout_analysis_error_ratio{{{V}}})", "{{version}}"),
                Target(f"max(ferryman_budget_error_ratio{{{M}}})", "max error ratio"),
            ],
            unit="percentunit",
            min=0,
        ),
        Panel(
            "Seconds since the last analysis",
            "timeseries",
            [
                Target(
                    f"time() - max by (model) (ferryman_rollout_last_analysis_timestamp_seconds{{{M}}})",
                    "{{model}}",
                )
            ],
            unit="s",
            min=0,
        ),
    )
    return d
