"""The compute-bound benchmark's report (``loadtests.bench.compute_report``): ratios, targets, the Markdown
section and its place in ``docs/benchmarks.md``; and the best-of-rounds merge
(``loadtests.bench.compute``)."""

from __future__ import annotations

from typing import Any

import pytest

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
    separate = got["latency cost of batching at 1 connection (p50, separate runs)"]
    assert abs(separate["value"] - 0.1) < 1e-9 and separate["met"] is None  # context: the pairs decide
    paired = got["latency cost of batching at 1 connection (p50, interleaved pairs)"]
    assert paired["value"] is None and "not run" in paired["note"]
    assert got["batching vs no batching, 32 connections"]["value"] == 5.0
    ray = got["batching vs Ray Serve @serve.batch, 64 connections"]
    assert ray["value"] is None and ray["met"] is None and "failed" in ray["note"]
    assert "not run" in got["gateway with batching vs raw-ORT limit, 64 connections"]["note"]


def test_a_level_with_errors_gives_no_ratio() -> None:
    entries = [RAW, _entry("ferryman-batched", _level(64, 5000, errors=3))]
    limit = _by_name(cr.compute(entries))["batching vs raw-ORT limit, 64 connections"]
    assert limit["value"] is None and "errors" in limit["note"]


def test_the_section_replaces_its_old_self_and_nothing_else() -> None:
    doc: dict[str, Any] = {
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


def _pairs(*ratios: tuple[float, float]) -> list[dict[str, Any]]:
    return [
        {"first": "ferryman-plain", "plain_p50_ms": plain, "batched_p50_ms": batched}
        for plain, batched in ratios
    ]


def test_the_interleaved_cost_is_the_median_pair_ratio_and_holds_the_target() -> None:
    # one pair hit by a burst on the batched half (3.0 / 1.5) does not move the median
    pairs = _pairs((1.5, 1.6), (2.0, 2.1), (1.5, 3.0), (1.6, 1.7), (1.8, 1.9))
    cost = cr.paired_cost(pairs)
    assert abs(cost - (1.7 / 1.6 - 1)) < 1e-9  # ratios 1.05, 1.056, 1.0625, 1.067, 2.0
    assert abs(cr.paired_cost(_pairs((1.0, 1.2), (1.0, 1.1))) - 0.15) < 1e-9  # even: the middle two's mean
    entry = {"name": cr.PAIRED, "status": "ok", "pairs": pairs, "cost": cost, "pair_seconds": 4.0}
    got = _by_name(cr.compute([RAW, entry]))[
        "latency cost of batching at 1 connection (p50, interleaved pairs)"
    ]
    assert got["value"] == cost and got["met"] is True and got["target"] == 0.1
    over = {**entry, "cost": 0.14}
    missed = _by_name(cr.compute([RAW, over]))[
        "latency cost of batching at 1 connection (p50, interleaved pairs)"
    ]
    assert missed["met"] is False and cr._value(missed) == "+14.0%"


def test_the_section_shows_every_interleaved_pair() -> None:
    pairs = _pairs((1.5, 1.6), (2.0, 2.1))
    entry = {
        "name": cr.PAIRED,
        "status": "ok",
        "pairs": pairs,
        "cost": cr.paired_cost(pairs),
        "pair_seconds": 4.0,
    }
    doc: dict[str, Any] = {
        "generated_at": "now",
        "quick": False,
        "json_name": "b.json",
        "machine": {},
        "settings": {"model": "m", "connections": (1,), "duration_s": 1.0, "warmup_s": 1.0, "ort_threads": 1},
        "contenders": [RAW, entry],
    }
    doc["comparisons"] = cr.compute(doc["contenders"])
    section = cr.markdown(doc)
    assert "### The cost at 1 connection, interleaved" in section
    assert "| 1 | ferryman-plain | 1.500 | 1.600 | 1.067 |" in section and "| 2 |" in section
    assert f"**{entry['cost']:+.1%}**" in section
    assert cr.PAIRED not in section.split("### Servers")[1].split("### The cost")[0]  # not a server row
    with pytest.raises(ValueError):
        cr.paired_cost([])
