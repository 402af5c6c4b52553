"""Drift: per-feature Evidently scores, dataset drift share vs threshold, prediction distribution."""

from __future__ import annotations

from ferryman.dashboards.grafana import RATE, Dashboard, M, Panel, Row, Target, V


def dashboard() -> Dashboard:
    d = Dashboard(
        uid="ferryman-drift",
        title="Ferryman / Drift",
        tags=["ferryman", "drift"],
        description="Input drift (Evidently, per feature and as a dataset drift share) and prediction "
        "drift of live traffic against each version's reference data.",
    )
    threshold = Target(f"max(ferryman_drift_share_threshold{{{M}}})", "threshold")
    d.add(
        Row("Dataset drift"),
        Panel(
            "Drift share by version vs threshold",
            "timeseries",
            [Target(f"max by (version) (ferryman_drift_share{{{V}}})", "{{version}}"), threshold],
            unit="percentunit",
            min=0,
            max=1,
            thresholds=[(None, "green"), (0.5, "red")],
        ),
        Panel(
            "Drift detected",
            "stat",
            [Target(f"max by (version) (ferryman_drift_detected{{{V}}})", "{{version}}")],
            width=6,
            thresholds=[(None, "green"), (1, "red")],
            options={"colorMode": "background"},
        ),
        Panel(
            "Drifted features",
            "stat",
            [Target(f"sum by (version) (ferryman_drift_feature_drifted{{{V}}})", "{{version}}")],
            width=6,
        ),
        Row("Features"),
        Panel(
            "Drift score per feature (latest)",
            "bargauge",
            [
                Target(
                    f"max by (version, feature) (ferryman_drift_score{{{V}}})",
                    "{{version}} {{feature}}",
                    instant=True,
                )
            ],
            width=12,
            height=12,
            description=(
                "Evidently's score: a p-value for K-S / chi-square / Z tests (low = drift), "
                "a distance for Wasserstein / Jensen-Shannon (high = drift)."
            ),
        ),
        Panel(
            "Drifted features over time",
            "timeseries",
            [Target(f"sum by (version) (ferryman_drift_feature_drifted{{{V}}})", "{{version}}")],
            width=12,
            height=12,
        ),
        Row("Predictions"),
        Panel(
            "Predicted class share by version",
            "timeseries",
            [
                Target(
                    f"sum by (version, class) (rate(ferryman_predictions_total{{{V}}}[{RATE}])) / "
                    "ignoring(class) "
                    f"group_left sum by (version) (rate(ferryman_predictions_total{{{V}}}[{RATE}]))",
                    "{{version}} class {{class}}",
                )
            ],
            unit="percentunit",
            min=0,
            max=1,
        ),
        Panel(
            "Prediction drift score by version",
            "timeseries",
            [Target(f"max by (version) (ferryman_prediction_drift_score{{{V}}})", "{{version}}")],
            min=0,
        ),
        Panel(
            "Prediction confidence (median and p10)",
            "timeseries",
            [
                Target(
                    "histogram_quantile(0.5, sum by (le, version) "
                    f"(rate(ferryman_prediction_confidence_bucket{{{V}}}"
                    f"[{RATE}])))",
                    "{{version}} p50",
                ),
                Target(
                    "histogram_quantile(0.1, sum by (le, version) "
                    f"(rate(ferryman_prediction_confidence_bucket{{{V}}}"
                    f"[{RATE}])))",
                    "{{version}} p10",
                ),
            ],
            unit="percentunit",
            min=0,
            max=1,
        ),
        Panel(
            "Predictions per second by class",
            "timeseries",
            [
                Target(
                    f"sum by (version, class) (rate(ferryman_predictions_total{{{V}}}[{RATE}]))",
                    "{{version}} {{class}}",
                )
            ],
            unit="reqps",
            stack=True,
        ),
        Row("Monitor"),
        Panel(
            "Live rows in the drift window",
            "timeseries",
            [Target(f"max by (version) (ferryman_drift_window_rows{{{V}}})", "{{version}}")],
            width=8,
        ),
        Panel(
            "Seconds since the last drift run",
            "timeseries",
            [
                Target(
                    f"time() - max by (version) (ferryman_drift_last_run_timestamp_seconds{{{V}}})",
                    "{{version}}",
                )
            ],
            unit="s",
            width=8,
        ),
        Panel(
            "Drift computation time (mean)",
            "timeseries",
            [
                Target(
                    f"sum by (model) (ferryman_drift_run_duration_seconds_sum{{{M}}}) / "
                    f"sum by (model) (ferryman_drift_run_duration_seconds_count{{{M}}})",
                    "{{model}}",
                )
            ],
            unit="s",
            width=8,
            description="Evidently's compute time per run, off the request path.",
        ),
    )
    return d
