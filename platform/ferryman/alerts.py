"""Prometheus alert and recording rules as code: a plain rules file, or a PrometheusRule for the operator.

    rules(slo) -> {"groups": [...]}                 # the rule groups
    rules_yaml(slo) -> str                          # monitoring/alerts/ferryman-rules.yaml
    prometheus_rule(slo, name=..., namespace=..., labels=...) -> dict   # monitoring.coreos.com/v1
    export(directory, *, kinds=("rules", "prometheusrule")) -> list[Path]

Latency SLO: ``latency_objective`` (99 %) of user-facing requests (shadow copies excluded) finish within
``latency_seconds`` (0.1 s, a bucket boundary of ferryman_request_duration_seconds). Budget burn is
alerted with the multi-window, multi-burn-rate scheme of the Google SRE workbook (30-day budget):
page at 14.4x over 1 h and 5 m or 6x over 6 h and 30 m; ticket at 3x over 1 d and 2 h or 1x over 3 d and 6 h.
The short window makes an alert stop soon after the burn stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Where each alert's runbook section lives; point it at your rendered docs (the chart can override it).
RUNBOOK_BASE = "docs/observability.md"
BY = "namespace, model"
USER_FACING = 'route!="shadow"'


@dataclass(frozen=True)
class SloConfig:
    latency_seconds: float = 0.1  # must be a bucket boundary of the request duration histogram
    latency_objective: float = 0.99
    max_error_ratio: float = 0.01
    error_for: str = "5m"
    drift_for: str = "10m"
    prediction_drift_for: str = "30m"
    not_ready_for: str = "2m"
    reload_rejected_for: str = "10m"

    def __post_init__(self) -> None:
        from ferryman.metrics import REQUEST_BUCKETS

        if self.latency_seconds not in REQUEST_BUCKETS:
            raise ValueError(
                f"latency threshold {self.latency_seconds} s is not a bucket boundary of "
                f"ferryman_request_duration_seconds ({', '.join(map(str, REQUEST_BUCKETS))})"
            )
        if not 0 < self.latency_objective < 1 or not 0 <= self.max_error_ratio < 1:
            raise ValueError("objective must be in (0, 1) and the error ratio in [0, 1)")

    @property
    def error_budget(self) -> float:
        return round(1.0 - self.latency_objective, 10)

    @property
    def le(self) -> str:
        """The ``le`` label value prometheus_client writes for the threshold bucket."""
        return repr(float(self.latency_seconds))


# (severity, long window, short window, burn factor, for)
BURN_WINDOWS = (
    ("page", "1h", "5m", 14.4, "2m"),
    ("page", "6h", "30m", 6.0, "5m"),
    ("ticket", "1d", "2h", 3.0, "15m"),
    ("ticket", "3d", "6h", 1.0, "30m"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def latency_bad_ratio(window: str, slo: SloConfig) -> str:
    """Share of user-facing requests slower than the threshold over ``window``, per namespace and model."""
    return (
        f"1 - (sum by ({BY}) (rate(ferryman_request_duration_seconds_bucket"
        f'{{le="{slo.le}", {USER_FACING}}}[{window}]))'
        f" / sum by ({BY}) (rate(ferryman_request_duration_seconds_count{{{USER_FACING}}}[{window}])))"
    )


def error_ratio(window: str) -> str:
    return (
        f'sum by ({BY}) (rate(ferryman_requests_total{{code=~"5..", {USER_FACING}}}[{window}]))'
        f" / sum by ({BY}) (rate(ferryman_requests_total{{{USER_FACING}}}[{window}]))"
    )


def _record(window: str) -> str:
    return f"ferryman:latency_slo_bad:ratio_rate{window}"


def _alert(
    name: str,
    expr: str,
    *,
    severity: str,
    summary: str,
    description: str,
    runbook_base: str,
    for_: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "team": "ml-platform"}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{runbook_base}#{name.lower()}",
    }
    return rule


def rules(slo: SloConfig | None = None, *, runbook_base: str = RUNBOOK_BASE) -> dict[str, Any]:
    slo = slo or SloConfig()
    rb = runbook_base
    budget = slo.error_budget
    recording = [{"record": _record(w), "expr": latency_bad_ratio(w, slo)} for w in WINDOWS]
    recording.append({"record": "ferryman:request_errors:ratio_rate5m", "expr": error_ratio("5m")})
    recording.append(
        {
            "record": "ferryman:requests:rate5m",
            "expr": f"sum by ({BY}) (rate(ferryman_requests_total{{{USER_FACING}}}[5m]))",
        }
    )

    burn_alerts = []
    for severity in ("page", "ticket"):
        clauses = [
            f"({_record(long)} > {factor:g} * {budget:g} and {_record(short)} > {factor:g} * {budget:g})"
            for sev, long, short, factor, _ in BURN_WINDOWS
            if sev == severity
        ]
        for_ = next(f for sev, *_, f in BURN_WINDOWS if sev == severity)
        name = "FerrymanLatencyBudgetBurn" if severity == "page" else "FerrymanLatencyBudgetBurnSlow"
        speed = "fast" if severity == "page" else "slowly"
        burn_alerts.append(
            _alert(
                name,
                "\n  or\n".join(clauses),
                severity=severity,
                for_=for_,
                runbook_base=rb,
                summary=f"{{{{ $labels.model }}}} is burning its latency error budget {speed}",
                description=(
                    f"More than {budget:.2%} of requests to "
                    f"{{{{ $labels.namespace }}}}/{{{{ $labels.model }}}} "
                    f"exceed {slo.latency_seconds * 1000:g} ms (SLO {slo.latency_objective:.2%}); "
                    f"{{{{ $value | humanizePercentage }}}} of requests are slow over the long window."
                ),
            )
        )

    alerts = [
        *burn_alerts,
        _alert(
            "FerrymanHighErrorRate",
            f"ferryman:request_errors:ratio_rate5m > {slo.max_error_ratio:g} and ferryman:requests:rate5m > "
            "0",
            severity="page",
            for_=slo.error_for,
            runbook_base=rb,
            summary="{{ $labels.model }} answers more than "
            f"{slo.max_error_ratio:.0%} of requests with a server error",
            description="{{ $value | humanizePercentage }} of requests to {{ $labels.namespace }}/"
            "{{ $labels.model }} failed with 5xx over the last 5 minutes.",
        ),
        _alert(
            "FerrymanDriftDetected",
            "max by (namespace, model, version) (ferryman_drift_detected) == 1",
            severity="warning",
            for_=slo.drift_for,
            runbook_base=rb,
            summary="Input drift on {{ $labels.model }} version {{ $labels.version }}",
            description="The share of drifted features (Evidently) reached the spec's threshold; see the "
            "Ferryman drift dashboard for the features involved.",
        ),
        _alert(
            "FerrymanPredictionDrift",
            "max by (namespace, model, version) (ferryman_prediction_drift_detected) == 1",
            severity="warning",
            for_=slo.prediction_drift_for,
            runbook_base=rb,
            summary="Prediction drift on {{ $labels.model }} version {{ $labels.version }}",
            description="The distribution of predictions differs from the predictions on the reference data.",
        ),
        _alert(
            "FerrymanRolloutRolledBack",
            'max by (namespace, model) (ferryman_rollout_phase{phase="rolled_back"}) == 1',
            severity="warning",
            runbook_base=rb,
            summary="The rollout of {{ $labels.model }} was rolled back",
            description="All traffic went back to the stable version; `ferryman status` shows the "
            "analysis that failed.",
        ),
        _alert(
            "FerrymanModelNotReady",
            "min by (namespace, model, version) (ferryman_model_ready) == 0",
            severity="page",
            for_=slo.not_ready_for,
            runbook_base=rb,
            summary="{{ $labels.model }} version {{ $labels.version }} is not ready",
            description="A server reports the version as not loaded/serving.",
        ),
        _alert(
            "FerrymanSpecReloadRejected",
            "max by (namespace, model) (ferryman_spec_reload_rejected) == 1",
            severity="warning",
            for_=slo.reload_rejected_for,
            runbook_base=rb,
            summary="The edited spec of {{ $labels.model }} was rejected; the previous spec still runs",
            description="The spec file on disk is not what serves traffic; `ferryman status` shows the "
            "validation error. Fix the file (or revert it) to clear this alert.",
        ),
    ]
    return {
        "groups": [
            {"name": "ferryman.slo.recording", "interval": "30s", "rules": recording},
            {"name": "ferryman.alerts", "rules": alerts},
        ]
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)


HEADER = "# Generated by `ferryman alerts export` from platform/ferryman/alerts.py; do not edit by hand.\n"


def rules_yaml(slo: SloConfig | None = None) -> str:
    return HEADER + dump(rules(slo))


def prometheus_rule(
    slo: SloConfig | None = None,
    *,
    name: str = "ferryman",
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "ferryman",
            "app.kubernetes.io/component": "alerts",
            **(labels or {}),
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": rules(slo),
    }


RULES_FILE = "ferryman-rules.yaml"
PROMETHEUS_RULE_FILE = "ferryman-prometheusrule.yaml"


def export(
    directory: str | Path,
    *,
    slo: SloConfig | None = None,
    kinds: tuple[str, ...] = ("rules", "prometheusrule"),
) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "rules" in kinds:
        path = out / RULES_FILE
        path.write_text(rules_yaml(slo))
        written.append(path)
    if "prometheusrule" in kinds:
        path = out / PROMETHEUS_RULE_FILE
        path.write_text(HEADER + dump(prometheus_rule(slo)))
        written.append(path)
    return written
