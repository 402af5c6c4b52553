"""Dashboards as code: structure, template variables, committed JSON in sync, only real metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ferryman import dashboards
from ferryman.dashboards.grafana import annotation_queries, queries, substitute, variable_queries
from ferryman.metrics import FerrymanMetrics

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "monitoring" / "dashboards"
VALUES = {"namespace": ".*", "model": "breast-cancer", "version": ".*", "__rate_interval": "30s"}


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    return dashboards.build()


def exposed_names() -> set[str]:
    """Every sample name the metrics module can expose (``_total``, ``_bucket``... included)."""
    reg = CollectorRegistry()
    FerrymanMetrics(reg)
    names = set()
    for family in reg.collect():
        kind = family.type
        base = family.name
        names |= {f"{base}_total"} if kind == "counter" else {base}
        if kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names


def test_three_dashboards_slo_rollout_drift(built: dict[str, dict]) -> None:
    assert set(built) == {"ferryman-slo.json", "ferryman-rollout.json", "ferryman-drift.json"}
    titles = {d["title"] for d in built.values()}
    assert titles == {"Ferryman / SLO overview", "Ferryman / Rollout", "Ferryman / Drift"}
    uids = [d["uid"] for d in built.values()]
    assert len(set(uids)) == 3


def test_committed_dashboards_are_what_the_code_generates(built: dict[str, dict]) -> None:
    for name, doc in built.items():
        path = COMMITTED / name
        assert path.is_file(), f"{path} missing: run `ferryman dashboards export monitoring/dashboards`"
        assert json.loads(path.read_text()) == doc, f"{path} is stale: run `ferryman dashboards export ...`"


def test_layout_ids_and_datasource(built: dict[str, dict]) -> None:
    for doc in built.values():
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids))
        occupied: set[tuple[int, int]] = set()
        for p in doc["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & occupied, f"panel {p['title']!r} overlaps another"
            occupied |= cells
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert p["targets"], p["title"]


def test_template_variables_namespace_model_version(built: dict[str, dict]) -> None:
    for doc in built.values():
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        for name in ("namespace", "model", "version"):
            v = variables[name]
            assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert 'namespace=~"$namespace"' in variables["model"]["definition"]


def test_every_query_is_scoped_by_the_variables(built: dict[str, dict]) -> None:
    selector = re.compile(r"(ferryman_[a-z0-9_]+)\{([^}]*)\}")
    for doc in built.values():
        for title, expr in queries(doc):
            found = selector.findall(expr)
            assert found, f"{title}: {expr}"
            for metric, labels in found:
                assert 'namespace=~"$namespace"' in labels and 'model=~"$model"' in labels, (title, metric)
            bare = re.findall(r"(ferryman_[a-z0-9_]+)(?![a-z0-9_{])", expr)
            assert not bare, f"{title}: unscoped metric {bare} in {expr}"


def test_queries_only_use_metrics_that_exist(built: dict[str, dict]) -> None:
    known = exposed_names()
    for doc in built.values():
        exprs = (
            [e for _, e in queries(doc)]
            + [e for _, e in annotation_queries(doc)]
            + [e for _, e in variable_queries(doc)]
        )
        for expr in exprs:
            for name in re.findall(r"\bferryman_[a-z0-9_]+", expr):
                assert name in known, f"{name} in {expr!r} is not a ferryman metric"


def test_latency_panels_use_the_exact_slo_bucket(built: dict[str, dict]) -> None:
    slo = built["ferryman-slo.json"]
    assert any('le="0.1"' in expr for _, expr in queries(slo))
    assert any("histogram_quantile(0.99" in expr for _, expr in queries(slo))


def test_substitute_fills_every_variable_and_rejects_unknown_ones(built: dict[str, dict]) -> None:
    for doc in built.values():
        for _, expr in queries(doc) + annotation_queries(doc):
            out = substitute(expr, VALUES)
            assert "$" not in out
    with pytest.raises(KeyError, match="typo"):
        substitute('up{x="$typo"}', VALUES)


def test_export_writes_files(tmp_path: Path) -> None:
    paths = dashboards.export(tmp_path)
    assert sorted(p.name for p in paths) == sorted(dashboards.build())
    for p in paths:
        assert json.loads(p.read_text())["schemaVersion"] >= 36
