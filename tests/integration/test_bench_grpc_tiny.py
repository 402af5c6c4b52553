"""The gRPC benchmark (loadtests.bench.grpc) on a tiny run: real servers, real ghz and wrk, a second each.

Correctness only: the document's structure, that load flowed over both transports without errors, that the
ratios are computed from the measured numbers, the CPU accounting, and that the section is written between
its own markers without touching the rest of the report. No figure is compared with a speed target.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtests import ghz
from loadtests.bench import grpc_report

ROOT = Path(__file__).resolve().parents[2]


def _tools() -> str | None:
    if shutil.which("wrk") is None:
        return "wrk is not installed (scripts/system-deps.sh)"
    try:
        ghz.binary(build=False)
    except ghz.GhzError as err:
        return f"{err} (scripts/setup.sh builds it)"
    return None


pytestmark = pytest.mark.skipif(_tools() is not None, reason=str(_tools()))


@pytest.fixture(scope="module")
def tiny_run(sample_models: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    work = tmp_path_factory.mktemp("bench-grpc")
    shutil.copytree(sample_models.directory, work / "examples")  # the harness reuses an existing export
    out = work / "bench.md"
    out.write_text(
        "# Benchmarks\n\nthe HTTP section\n\n<!-- compute-bound:start -->\nkept\n<!-- compute-bound:end -->\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.bench.grpc",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--out",
            str(out),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((work / "benchmarks-grpc.json").read_text())
    return doc, out.read_text()


def test_document_structure(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    assert doc["schema"] == 1 and doc["settings"]["streams"] == 16 and doc["settings"]["ghz"] == ghz.VERSION
    assert [e["name"] for e in doc["contenders"]] == [
        "grpcio-ceiling",
        "ferryman",
        "ferryman-grpcio",
        "kserve-stock",
    ]
    assert {name: set(e["loads"]) for name, e in ((e["name"], e) for e in doc["contenders"])} == {
        "grpcio-ceiling": {"grpc"},
        "ferryman": {"grpc", "rest"},
        "ferryman-grpcio": {"grpc"},
        "kserve-stock": {"grpc"},
    }


def test_load_flowed_without_errors_and_cpu_was_counted(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    for e in doc["contenders"]:
        assert e["status"] == "ok", e
        for transport, load in e["loads"].items():
            assert load["requests"] > 0 and load["errors"] == 0, (e["name"], transport, load)
            assert load["rows_per_s"] == pytest.approx(load["requests"] / load["duration_s"], rel=0.01)
            assert 0 < load["p50_ms"] <= load["p99_ms"]
            assert load["server_cpu_us_per_row"] > 0 and load["client_cpu_us_per_row"] > 0
        if "grpc" in e["loads"]:
            assert e["loads"]["grpc"]["statuses"] == {"OK": e["loads"]["grpc"]["requests"]}


def test_ratios_come_from_the_measured_numbers(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    loads = {e["name"]: e["loads"] for e in doc["contenders"]}
    rows = {c["name"]: c for c in doc["comparisons"]}
    vs_kserve = rows["ferryman gRPC vs stock KServe gRPC (rows/s)"]
    expected = loads["ferryman"]["grpc"]["rows_per_s"] / loads["kserve-stock"]["grpc"]["rows_per_s"]
    assert vs_kserve["value"] == pytest.approx(expected) and vs_kserve["met"] == (expected >= 3.0)
    vs_rest = rows["ferryman gRPC vs ferryman REST (rows/s)"]
    expected = loads["ferryman"]["grpc"]["rows_per_s"] / loads["ferryman"]["rest"]["rows_per_s"]
    assert vs_rest["value"] == pytest.approx(expected) and vs_rest["met"] == (expected >= 0.8)
    assert rows["ferryman gRPC p99 (ms)"]["value"] == loads["ferryman"]["grpc"]["p99_ms"]


def test_the_section_replaces_only_its_own_part(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, md = tiny_run
    assert md.startswith("# Benchmarks\n\nthe HTTP section\n")
    assert "<!-- compute-bound:start -->\nkept\n<!-- compute-bound:end -->" in md
    section = grpc_report.section_of(md)
    assert section is not None and md.count(grpc_report.START) == 1
    assert "## gRPC" in section and "ferryman gRPC vs stock KServe gRPC" in section
    assert grpc_report.replace_section(md, grpc_report.markdown(doc)) == md  # idempotent


def test_a_missing_contender_is_reported_not_fatal() -> None:
    rows = {
        c["name"]: c
        for c in grpc_report.compute([{"name": "ferryman", "status": "failed", "error": "boom", "loads": {}}])
    }
    assert rows["ferryman gRPC vs stock KServe gRPC (rows/s)"]["value"] is None
    assert rows["ferryman gRPC vs stock KServe gRPC (rows/s)"]["note"] == "ferryman: failed (boom)"
    assert rows["stock KServe gRPC p99 (ms)"]["note"] == "kserve-stock: not run"
