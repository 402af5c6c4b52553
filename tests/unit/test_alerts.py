"""Alert rules as code: the rules, the PrometheusRule form, SLO parameters, committed file in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ferryman import alerts
from ferryman.alerts import SloConfig
from ferryman.metrics import FerrymanMetrics

REPO = Path(__file__).resolve().parents[2]
ALERTS_DIR = REPO / "monitoring" / "alerts"
EXPECTED = {
    "FerrymanLatencyBudgetBurn",
    "FerrymanLatencyBudgetBurnSlow",
    "FerrymanHighErrorRate",
    "FerrymanDriftDetected",
    "FerrymanPredictionDrift",
    "FerrymanRolloutRolledBack",
    "FerrymanModelNotReady",
    "FerrymanSpecReloadRejected",
}


def all_rules(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"]]


def test_the_alerts_the_issue_asks_for() -> None:
    rules = all_rules(alerts.rules())
    names = {r["alert"] for r in rules if "alert" in r}
    assert names == EXPECTED
    for r in rules:
        if "alert" in r:
            assert r["labels"]["severity"] in {"page", "ticket", "warning"}
            assert r["annotations"]["summary"] and r["annotations"]["runbook_url"].endswith(
                r["alert"].lower()
            )


def test_multi_window_multi_burn_rate_on_the_100ms_slo() -> None:
    rules = {r.get("alert") or r["record"]: r for r in all_rules(alerts.rules())}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        expr = rules[f"ferryman:latency_slo_bad:ratio_rate{window}"]["expr"]
        assert 'le="0.1"' in expr and f"[{window}]" in expr and 'route!="shadow"' in expr
    page = rules["FerrymanLatencyBudgetBurn"]["expr"]
    assert "ratio_rate1h > 14.4 * 0.01 and ferryman:latency_slo_bad:ratio_rate5m > 14.4 * 0.01" in page
    assert "ratio_rate6h > 6 * 0.01 and ferryman:latency_slo_bad:ratio_rate30m > 6 * 0.01" in page
    ticket = rules["FerrymanLatencyBudgetBurnSlow"]["expr"]
    assert "ratio_rate1d > 3 * 0.01" in ticket and "ratio_rate3d > 1 * 0.01" in ticket


def test_other_slo_parameters() -> None:
    slo = SloConfig(latency_seconds=0.25, latency_objective=0.999, max_error_ratio=0.05)
    rules = {r.get("alert") or r["record"]: r for r in all_rules(alerts.rules(slo))}
    assert 'le="0.25"' in rules["ferryman:latency_slo_bad:ratio_rate5m"]["expr"]
    assert "14.4 * 0.001" in rules["FerrymanLatencyBudgetBurn"]["expr"]
    assert "> 0.05" in rules["FerrymanHighErrorRate"]["expr"]
    with pytest.raises(ValueError, match="bucket boundary"):
        SloConfig(latency_seconds=0.11)
    with pytest.raises(ValueError):
        SloConfig(latency_objective=1.0)


def test_rules_only_use_metrics_that_exist() -> None:
    reg = CollectorRegistry()
    FerrymanMetrics(reg)
    known = set()
    for f in reg.collect():
        known |= (
            {f"{f.name}_total"} if f.type == "counter" else {f.name, f"{f.name}_bucket", f"{f.name}_count"}
        )
    for r in all_rules(alerts.rules()):
        for name in re.findall(r"\bferryman_[a-z0-9_]+", r["expr"]):
            assert name in known, name


def test_prometheus_rule_wraps_the_same_groups() -> None:
    pr = alerts.prometheus_rule(name="ferryman", namespace="serving", labels={"release": "kube-prometheus"})
    assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["kind"] == "PrometheusRule"
    assert (
        pr["metadata"]["namespace"] == "serving" and pr["metadata"]["labels"]["release"] == "kube-prometheus"
    )
    assert pr["spec"] == alerts.rules()


def test_committed_rules_are_what_the_code_generates(tmp_path: Path) -> None:
    committed = ALERTS_DIR / alerts.RULES_FILE
    assert committed.read_text() == alerts.rules_yaml(), (
        "stale: run `ferryman alerts export monitoring/alerts`"
    )
    written = alerts.export(tmp_path)
    assert {p.name for p in written} == {alerts.RULES_FILE, alerts.PROMETHEUS_RULE_FILE}
    assert yaml.safe_load((tmp_path / alerts.PROMETHEUS_RULE_FILE).read_text())["spec"] == alerts.rules()
    assert (ALERTS_DIR / alerts.PROMETHEUS_RULE_FILE).read_text() == (
        tmp_path / alerts.PROMETHEUS_RULE_FILE
    ).read_text()
