"""The compute-bound benchmark's report (``loadtests.bench.compute_report``): ratios, targets, the Markdown
section and its place in ``docs/benchmarks.md``; and the best-of-rounds merge
(``loadtests.bench.compute``)."""

from __future__ import annotations

from typing import Any

from loadtests.bench import compute_report as cr
from loadtests.bench.compute import best_levels, mean_batch


def _level(
    connections: int,
    rows: float,
    *,
    p50: float = 1.0,
    p99: float = 10.0,
    batch: float | None = None,
    errors: int = 0,
) -> dict[str, Any]:
    return {
        "connections": connections,
        "rows_per_s": rows,
        "rps": rows,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_batch": batch,
        "non_2xx": errors,
        "socket_errors": 0,
    }


def _entry(name: str, *levels: dict[str, Any], status: str = "ok") -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "group": "x",
        "status": status,
        "error": None if status == "ok" else "why",
        "levels": list(levels),
    }


RAW = {
    "name": "raw-ort",
    "label": "raw",
    "group": "limit",
    "status": "ok",
    "threads": 1,
    "sweep": [
        {"batch_size": 1, "rows_per_s": 400.0, "p50_ms": 2.5, "p99_ms": 3.0},
        {"batch_size": 32, "rows_per_s": 3000.0, "p50_ms": 10.0, "p99_ms": 12.0},
    ],
    "best": {"batch_size": 32, "rows_per_s": 3000.0, "p50_ms": 10.0, "p99_ms": 12.0},
}


def _by_name(comparisons: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in comparisons}


def test_ratios_and_targets() -> None:
    entries = [
        RAW,
        _entry(
            "ferryman-batched",
            _level(1, 300, p50=3.3),
            _level(32, 2000, batch=20.0),
            _level(64, 2700, p99=90.0),
        ),
        _entry("ferryman-plain", _level(1, 330, p50=3.0), _level(32, 400), _level(64, 400)),
        _entry("kserve-stock", _level(64, 1000)),
        _entry("ray-serve-batch", status="failed"),
    ]
    got = _by_name(cr.compute(entries))
    limit = got["batching vs raw-ORT limit, 64 connections"]
    assert limit["value"] == 0.9 and limit["met"] is True
    assert got["batching p99 at 64 connections (ms)"]["met"] is True
    assert got["batching vs stock KServe, 64 connections"]["value"] == 2.7
    assert got["batching vs stock KServe, 64 connections"]["met"] is False
    cost = got["latency cost of batching at 1 connection (p50)"]
    assert abs(cost["value"] - 0.1) < 1e-9 and cost["met"] is True
    assert got["batching vs no batching, 32 connections"]["value"] == 5.0
    ray = got["batching vs Ray Serve @serve.batch, 64 connections"]
    assert ray["value"] is None and ray["met"] is None and "failed" in ray["note"]
    assert "not run" in got["gateway with batching vs raw-ORT limit, 64 connections"]["note"]


def test_a_level_with_errors_gives_no_ratio() -> None:
    entries = [RAW, _entry("ferryman-batched", _level(64, 5000, errors=3))]
    limit = _by_name(cr.compute(entries))["batching vs raw-ORT limit, 64 connections"]
    assert limit["value"] is None and "errors" in limit["note"]


def test_the_section_replaces_its_old_self_and_nothing_else() -> None:
    doc = {
        "generated_at": "now",
        "quick": True,
        "json_name": "b.json",
        "machine": {"load_average": [1, 1, 1]},
        "settings": {
            "model": "m",
            "connections": (1, 64),
            "duration_s": 1.0,
            "warmup_s": 1.0,
            "ort_threads": 1,
        },
        "contenders": [
            RAW,
            _entry("ferryman-batched", _level(1, 300), _level(64, 2700)),
            _entry("ray-serve-batch", status="n/a"),
        ],
    }
    doc["comparisons"] = cr.compute(doc["contenders"])
    section = cr.markdown(doc)
    assert section.startswith(cr.START) and section.rstrip().endswith(cr.END)
    assert "| `ferryman-batched` |" in section and "n/a: why" in section and "0.90x" in section
    first = cr.replace_section("# Benchmarks\n\nmain part\n", section)
    assert first.startswith("# Benchmarks\n\nmain part\n") and cr.section_of(first) == section
    again = cr.replace_section(first + "\ntrailer\n", section.replace("0.90x", "0.91x"))
    assert (
        again.count(cr.START) == 1
        and "0.91x" in again
        and "0.90x" not in again
        and again.endswith("trailer\n")
    )


def test_best_of_rounds_per_level_and_mean_batch() -> None:
    a = _entry("x", _level(1, 100), _level(64, 900))
    b = _entry("x", _level(1, 120), _level(64, 800))
    merged = best_levels([a, b])
    assert [lv["rows_per_s"] for lv in merged["levels"]] == [120, 900]
    assert merged["levels"][1]["rounds_rows_per_s"] == [900, 800]
    assert best_levels([a, _entry("x", status="failed")])["status"] == "failed"
    assert mean_batch((10.0, 50.0), (20.0, 250.0)) == 20.0
    assert mean_batch((10.0, 50.0), (10.0, 50.0)) is None and mean_batch(None, (1.0, 1.0)) is None
