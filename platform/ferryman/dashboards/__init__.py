"""Grafana dashboards generated as code (plain JSON; no grafanalib).

    build() -> {"ferryman-slo.json": {...}, "ferryman-rollout.json": {...}, "ferryman-drift.json": {...}}
    export(directory) -> [paths]                    # what `ferryman dashboards export DIR` writes

Files: ``grafana.py`` (the builder, template variables, query helpers for tests), ``slo.py``,
``rollout.py``, ``drift.py`` (one dashboard each).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ferryman.alerts import SloConfig
from ferryman.dashboards import drift, rollout, slo


def build(slo_config: SloConfig | None = None) -> dict[str, dict[str, Any]]:
    return {
        "ferryman-slo.json": slo.dashboard(slo_config).to_json(),
        "ferryman-rollout.json": rollout.dashboard(slo_config).to_json(),
        "ferryman-drift.json": drift.dashboard().to_json(),
    }


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=False) + "\n"


def export(directory: str | Path, *, slo_config: SloConfig | None = None) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in build(slo_config).items():
        path = out / name
        path.write_text(render(doc))
        written.append(path)
    return written
