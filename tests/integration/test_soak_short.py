"""The short soak `make test` runs: the real soak harness against a real `ferryman up`, briefly.

The 10-minute soak is `make soak` (results in docs/soak.md); this one proves the harness works end to end:
steady Locust load through the exact budget gate, memory sampled, a Markdown report with the verdict.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtests.soak import rss_growth

ROOT = Path(__file__).resolve().parents[2]


def test_rss_growth_ignores_warm_up_and_measures_the_tail() -> None:
    samples: list[tuple[float, float]] = [
        (0, 100.0),
        (5, 140.0),
        (10, 141.0),
        (15, 142.0),
        (20, 145.0),
        (25, 146.0),
        (30, 150.0),
        (35, 151.0),
    ]
    assert rss_growth(samples) == 151.0 - 140.0
    assert rss_growth(samples[:3]) is None


def test_short_soak_passes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "soak.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.soak",
            "--minutes",
            "0.4",
            "--users",
            "4",
            "--budget-ms",
            "2000",
            "--max-error-rate",
            "0",
            "--max-rss-growth-mib",
            "256",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert "| verdict | PASS |" in report
    assert "server RSS first / last / peak" in report
    requests = int(report.split("| requests | ")[1].split(" |")[0].replace(",", ""))
    assert requests > 50
