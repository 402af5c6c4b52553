"""The benchmark harness on a tiny run: real servers, real wrk, one second each; correctness only.

Checks the result document's structure, that load actually flowed (requests, no non-2xx), that ratios are
computed from the measured numbers, and that a contender that fails or is missing is reported, not fatal.
No figure is compared with a speed target.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console

from loadtests import payloads
from loadtests.bench.contenders import BenchContext, Contender, ProcessContender
from loadtests.bench.harness import Bench, Settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (scripts/system-deps.sh)"
)


@pytest.fixture(scope="module")
def tiny_run(sample_models: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    work = tmp_path_factory.mktemp("bench")
    shutil.copytree(sample_models.directory, work / "examples")  # the harness reuses an existing export
    out = work / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.bench",
            "--contenders",
            "raw-ort,minimal-asgi,ferryman-native",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--batch-duration",
            "1",
            "--rounds",
            "1",
            "--no-compute",
            "--no-grpc",
            "--out",
            str(out),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.with_suffix(".json").read_text())
    return doc, out.read_text()


def test_document_structure(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    assert doc["schema"] == 1
    assert {
        "cpu",
        "cores",
        "memory_gib",
        "python",
        "versions",
        "load_average_before",
        "load_average_after",
    } <= set(doc["machine"])
    assert "onnxruntime" in doc["machine"]["versions"]
    assert doc["settings"]["load_generator"] == "wrk -t1 -c16"
    assert doc["settings"]["duration_s"] == 1.0
    assert [e["name"] for e in doc["contenders"]] == ["raw-ort", "minimal-asgi", "ferryman-native"]


def test_load_flowed_without_errors(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    for e in doc["contenders"]:
        assert e["status"] == "ok", e
        r = e["result"]
        assert r["requests"] > 0
        assert r["non_2xx"] == 0 and r["socket_errors"] == 0
        assert r["rps"] == pytest.approx(r["requests"] / r["duration_s"])
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    http = {e["name"]: e for e in doc["contenders"] if e["name"] != "raw-ort"}
    assert all(e["startup_s"] > 0 for e in http.values())
    batch = http["ferryman-native"]["batch"]
    assert batch["requests"] > 0 and batch["non_2xx"] == 0
    assert batch["rows_per_s"] == pytest.approx(batch["rps"] * 256)
    assert http["minimal-asgi"]["batch"] is None  # it does not speak the binary extension


def test_ratios_come_from_the_measured_numbers(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    by = {e["name"]: e for e in doc["contenders"]}
    rows = {r["name"]: r for r in doc["comparisons"]}
    native_vs_min = rows["native vs minimal ASGI"]
    expected = by["ferryman-native"]["result"]["rps"] / by["minimal-asgi"]["result"]["rps"]
    assert native_vs_min["value"] == pytest.approx(expected)
    assert native_vs_min["met"] == (expected >= 0.7)
    share = rows["native vs raw ORT (share of the in-process limit)"]
    assert share["value"] == pytest.approx(
        by["ferryman-native"]["result"]["rps"] / by["raw-ort"]["result"]["rps"]
    )
    batch = rows["native 256-row batches vs raw ORT (rows/s)"]
    assert batch["value"] == pytest.approx(
        by["ferryman-native"]["batch"]["rows_per_s"] / by["raw-ort"]["batch"]["rows_per_s"]
    )
    p99 = rows["native p99 at 16 connections"]
    assert p99["value"] == by["ferryman-native"]["result"]["p99_ms"]
    assert "gateway vs minimal ASGI" not in rows  # the gateway was not part of this run


def test_markdown_has_the_tables(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, md = tiny_run
    assert md.startswith("# Benchmarks")
    for heading in ("## Machine", "## Throughput and latency", "## Ratios and targets", "## Large batches"):
        assert heading in md
    assert doc["machine"]["cpu"] in md
    for e in doc["contenders"]:
        assert f"`{e['name']}`" in md


class _ExitsAtOnce(ProcessContender):
    name, label, group = "exits-at-once", "a server that exits with status 3", "peer"
    startup_timeout = 20.0
    seen: ClassVar[list[Any]] = []

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [sys.executable, "-c", "import sys; print('cannot start: no model'); sys.exit(3)"]

    def start(self, ctx: BenchContext) -> None:
        try:
            super().start(ctx)
        finally:
            self.seen.append(self.server)


class _Missing(Contender):
    name, label, group = "missing", "a contender whose module is not there", "ferryman"

    def unavailable(self, ctx: BenchContext) -> str | None:
        return "module nowhere.to.be.found is not available"


def test_failed_and_missing_contenders_are_reported(sample_models: Any, tmp_path: Path) -> None:
    examples = Path(sample_models.directory)
    ctx = BenchContext(
        workdir=tmp_path,
        spec=Path(sample_models.spec),
        model_path=examples / "models/v1/model.onnx",
        model_name="breast-cancer",
        rows=payloads.load_rows(examples),
        repo_root=ROOT,
        env={"PYTHONPATH": str(ROOT)},
    )
    console = Console(file=io.StringIO(), width=120)
    doc = Bench(ctx, Settings(duration_s=1, warmup_s=0, batch=False, rounds=2), console=console).run(
        [_ExitsAtOnce(), _Missing()]
    )
    failed, missing = doc["contenders"]
    assert failed["status"] == "failed"
    assert "exited while waiting" in failed["error"]
    assert "cannot start: no model" in failed["output_tail"]
    assert failed["result"] is None
    assert len(_ExitsAtOnce.seen) == 1  # a broken contender is not retried in the second round
    assert _ExitsAtOnce.seen[0].process.poll() == 3
    assert missing["status"] == "n/a"
    assert missing["error"] == "module nowhere.to.be.found is not available"
