"""`ferryman loadtest` against a real `ferryman serve`: Locust runs headless, the gate decides the exit code.

Short runs (a few seconds each). Nothing here asserts how fast the server is: the budgets are either
generous (passes on any machine) or impossible (0.01 ms, fails on any machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.ports import free_port
from tests.helpers.servers import CliServer, run_ferryman

GENEROUS_MS = "60000"
# Locust and gevent compile ~600 modules at start-up; where the environment forbids bytecode files, keep a
# cache under .cache (git-ignored) so each run starts in seconds rather than tens of seconds.
SPEEDY_START = {
    "PYTHONDONTWRITEBYTECODE": "",
    "PYTHONPYCACHEPREFIX": str(Path(__file__).resolve().parents[2] / ".cache" / "pycache"),
}


def _loadtest(server_url: str, data: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
    args = [
        "loadtest",
        "--host",
        server_url,
        "--users",
        "3",
        "--spawn-rate",
        "3",
        "--duration",
        "2s",
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    ]  # later options (e.g. --users) override
    proc = run_ferryman(args, timeout=180, env=SPEEDY_START)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return proc.returncode, summary, proc.stdout + proc.stderr


@pytest.mark.parametrize(("protocol", "shape"), [("v2", "steady"), ("v2-binary", "spike"), ("v1", "ramp")])
def test_generous_budget_passes_and_writes_reports(
    native_server: CliServer, sample_models: Any, tmp_path: Path, protocol: str, shape: str
) -> None:
    code, summary, output = _loadtest(
        native_server.url,
        sample_models.directory,
        tmp_path,
        "--protocol",
        protocol,
        "--shape",
        shape,
        "--budget-ms",
        GENEROUS_MS,
    )
    assert code == 0, output
    assert summary is not None and summary["passed"] is True and summary["reasons"] == []
    exact = summary["exact"]
    assert exact["requests"] > 0
    assert exact["failures"] == 0
    assert 0 < exact["p50_ms"] <= exact["p99_ms"] <= exact["max_ms"]
    # the exact times are every request the Locust processes recorded
    recorded = sum(np.load(p)["times_ms"].size for p in tmp_path.glob("exact-*.npz"))
    assert recorded == exact["requests"]
    assert (tmp_path / "locust_stats.csv").is_file()
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert "PASS" in output
    assert summary["protocol"] == protocol and summary["shape"] == shape


def test_impossible_budget_fails_the_gate(
    native_server: CliServer, sample_models: Any, tmp_path: Path
) -> None:
    code, summary, output = _loadtest(
        native_server.url, sample_models.directory, tmp_path, "--budget-ms", "0.01"
    )
    assert code == 1, output
    assert summary is not None and summary["passed"] is False
    assert summary["exact"]["failures"] == 0
    assert summary["exact"]["p99_ms"] > 0.01
    assert any("exceeds the 0.01 ms budget" in r for r in summary["reasons"])
    assert "budget gate failed" in output


def test_errors_over_the_maximum_fail_the_gate(
    native_server: CliServer, sample_models: Any, tmp_path: Path
) -> None:
    # An unknown model: every request gets a 404, which Locust records as a failure.
    code, summary, output = _loadtest(
        native_server.url,
        sample_models.directory,
        tmp_path,
        "--model",
        "no-such-model",
        "--budget-ms",
        GENEROUS_MS,
        "--protocol",
        "v1",
    )
    assert code == 1, output
    assert summary is not None
    assert summary["exact"]["requests"] > 0
    assert summary["exact"]["failures"] == summary["exact"]["requests"]
    assert any("error rate 100.00% exceeds the maximum 1.00%" in r for r in summary["reasons"])


def test_unreachable_host_is_an_error_not_a_verdict(sample_models: Any, tmp_path: Path) -> None:
    code, summary, output = _loadtest(f"http://127.0.0.1:{free_port()}", sample_models.directory, tmp_path)
    assert code == 2, output
    assert summary is None
    assert "cannot reach" in output


def test_worker_processes_times_are_aggregated(
    native_server: CliServer, sample_models: Any, tmp_path: Path
) -> None:
    # Forked workers can take a second or two to start their users on a busy machine: a longer run.
    code, summary, output = _loadtest(
        native_server.url,
        sample_models.directory,
        tmp_path,
        "--processes",
        "2",
        "--users",
        "4",
        "--duration",
        "6s",
        "--budget-ms",
        GENEROUS_MS,
    )
    assert code == 0, output
    assert summary is not None
    per_process = [np.load(p)["times_ms"].size for p in tmp_path.glob("exact-*.npz")]
    assert sum(1 for n in per_process if n > 0) == 2  # both workers recorded requests (the master none)
    assert sum(per_process) == summary["exact"]["requests"]
    # (Locust's own CSV can count fewer: the master writes it before the workers' last reports arrive.)
