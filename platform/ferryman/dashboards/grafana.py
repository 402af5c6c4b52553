"""A tiny Grafana dashboard builder: panels, PromQL targets, template variables, grid layout (no deps).

Every query uses the template variables ``$namespace``, ``$model`` and ``$version`` through the selectors
below; :func:`queries` lists a dashboard's expressions and :func:`substitute` fills the variables the way
Grafana does, so tests can run each panel's query against a real Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39

# Selectors: "model" scope (model-level metrics) and "version" scope (per-version metrics).
M = 'namespace=~"$namespace", model=~"$model"'
V = 'namespace=~"$namespace", model=~"$model", version=~"$version"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    title: str
    kind: str  # timeseries, stat, state-timeline, bargauge
    targets: list[Target]
    description: str = ""
    unit: str = "short"
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    thresholds: list[tuple[float | None, str]] | None = None
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str


@dataclass
class Annotation:
    name: str
    expr: str
    title: str
    text: str = ""
    color: str = "orange"


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    tags: list[str]
    items: list[Panel | Row] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    version_variable: bool = True

    def add(self, *items: Panel | Row) -> Dashboard:
        self.items.extend(items)
        return self

    def to_json(self) -> dict[str, Any]:
        panels = []
        x = y = row_height = 0
        for i, item in enumerate(self.items, start=1):
            if isinstance(item, Row):
                if x:
                    y += row_height
                x, row_height = 0, 0
                panels.append(
                    {
                        "id": i,
                        "type": "row",
                        "title": item.title,
                        "collapsed": False,
                        "panels": [],
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    }
                )
                y += 1
                continue
            if x + item.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(item, i, x=x, y=y))
            x += item.width
            row_height = max(row_height, item.height)
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"},
            "timezone": "browser",
            "templating": {"list": _variables(self.version_variable)},
            "annotations": {
                "list": [_builtin_annotation(), *(_annotation_json(a) for a in self.annotations)]
            },
            "panels": panels,
        }


def _variables(with_version: bool) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"},
            "definition": query,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "refresh": 2,
            "sort": 1,
            "hide": 0,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "regex": "",
        }

    out = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "current": {},
            "options": [],
        },
        query_var("namespace", "Namespace", "label_values(ferryman_model_ready, namespace)"),
        query_var("model", "Model", 'label_values(ferryman_model_ready{namespace=~"$namespace"}, model)'),
    ]
    if with_version:
        out.append(
            query_var(
                "version",
                "Version",
                'label_values(ferryman_model_ready{namespace=~"$namespace", model=~"$model"}, version)',
            )
        )
    return out


def _builtin_annotation() -> dict[str, Any]:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def _annotation_json(a: Annotation) -> dict[str, Any]:
    return {
        "name": a.name,
        "datasource": DATASOURCE,
        "enable": True,
        "expr": a.expr,
        "iconColor": a.color,
        "step": "30s",
        "titleFormat": a.title,
        "textFormat": a.text,
        "useValueForTime": False,
    }


def _panel_json(p: Panel, pid: int, *, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    steps = [{"color": color, "value": value} for value, color in (p.thresholds or [(None, "green")])]
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    options: dict[str, Any]
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if p.stack else 5,
            "showPoints": "never",
            "spanNulls": True,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if p.thresholds else "off"},
        }
        options = {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
        }
    elif p.kind == "state-timeline":
        options = {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"showLegend": True},
        }
    elif p.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        }
    else:
        raise ValueError(f"unknown panel kind {p.kind!r}")
    options.update(p.options)
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend,
                "range": not t.instant,
                "instant": t.instant,
                "editorMode": "code",
            }
            for i, t in enumerate(p.targets)
        ],
    }


# -- reading dashboards back (tests, docs) -----------------------------------------------------------
def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, in order."""
    out = []
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"]))
    return out


def annotation_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["name"], v["definition"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]


_VAR = re.compile(r"\$(__rate_interval|__interval|__range|[a-z_]+)|\$\{([a-z_]+)\}")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name``/``${name}`` like Grafana does; unknown variables raise (a typo is a bug)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)
