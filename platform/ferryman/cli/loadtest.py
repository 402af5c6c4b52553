"""`ferryman loadtest`: run the Locust scenarios headless and gate the result on the latency budget.

Locust runs as a subprocess (``python -m locust -f loadtests/locustfile.py --headless ...``), so the CLI
never imports Locust (or gevent's monkey patching). It writes Locust's CSV and HTML reports plus
``summary.json`` into ``--out``, prints a summary table and exits 0 when the run met the budget, 1 when
p99 exceeded ``--budget-ms`` or the error rate exceeded ``--max-error-rate``, 2 when the test could not run.
The p99 comes from the exact time of every request (``exact-*.npz`` written by each Locust process), not
from Locust's statistics, which round 100 ms-1 s to 10 ms; see :mod:`ferryman.budget`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ferryman import budget
from ferryman.cli import main as cli_main
from ferryman.errors import FerrymanError

PROTOCOLS = ("v2", "v2-binary", "v1")
SHAPES = ("steady", "ramp", "spike", "none")
DEFAULT_OUT = Path(".cache/loadtest/report")
DEFAULT_DATA_DIR = Path(".cache/loadtest/examples")
EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)?")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


class LoadTestError(FerrymanError):
    """The load test could not run (no locustfile, unreachable host, Locust crashed)."""


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"30s"``, ``"2m"``, ``"1h30m"`` or ``"1m30s"``."""
    raw = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not raw or pos != len(raw) or total <= 0:
        raise LoadTestError(f"duration {text!r}: use seconds or a form like 30s, 2m, 1m30s")
    return total


def find_locustfile(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``loadtests/locustfile.py`` under the working directory or the source checkout."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise LoadTestError(f"locustfile {path} not found")
        return path.resolve()
    candidates = [
        Path.cwd() / "loadtests" / "locustfile.py",
        Path(__file__).resolve().parents[3] / "loadtests" / "locustfile.py",
    ]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise LoadTestError(
        "loadtests/locustfile.py not found: run from the ferryman checkout or pass --locustfile"
    )


def ensure_data(data: str | Path | None) -> Path:
    """The traffic rows to send: ``data`` (traffic.npy or an export directory), else a cached export."""
    if data:
        path = Path(data)
        path = path / "traffic.npy" if path.is_dir() else path
        if not path.is_file():
            raise LoadTestError(f"--data {data}: no traffic.npy there (run `ferryman examples export DIR`)")
        return path.resolve()
    path = DEFAULT_DATA_DIR / "traffic.npy"
    if not path.is_file():
        from ferryman.examples import export

        with Console(stderr=True).status(f"exporting the sample dataset into {DEFAULT_DATA_DIR}"):
            export(DEFAULT_DATA_DIR)
    return path.resolve()


@dataclass(frozen=True, slots=True)
class RunConfig:
    host: str
    users: int
    spawn_rate: float
    duration_s: float
    budget_ms: float
    max_error_rate: float
    protocol: str = "v2"
    model: str = "breast-cancer"
    shape: str = "steady"
    out: Path = DEFAULT_OUT


def locust_command(*, config: RunConfig, locustfile: Path, processes: int = 1) -> list[str]:
    out = config.out
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        config.host,
        "--users",
        str(config.users),
        "--spawn-rate",
        f"{config.spawn_rate:g}",
        "--run-time",
        f"{max(1, round(config.duration_s))}s",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return cmd


def load_exact_times(directory: Path) -> tuple[np.ndarray, int]:
    """Every request's exact time (ms) and the failure count, from all Locust processes' files."""
    times: list[np.ndarray] = []
    failures = 0
    for path in sorted(directory.glob("exact-*.npz")):
        with np.load(path) as data:
            t = np.asarray(data["times_ms"], dtype=np.float64)
            f = np.asarray(data["failed"], dtype=bool)
        # A request with no time (connection error before timing) counts as failed and as infinitely slow.
        times.append(np.where(np.isnan(t), np.inf, t))
        failures += int(f.sum())
    return (np.concatenate(times) if times else np.empty(0)), failures


def read_locust_aggregate(stats_csv: Path) -> dict[str, float]:
    """Locust's own (rounded) aggregate figures, shown beside the exact ones."""
    if not stats_csv.is_file():
        return {}
    with stats_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                return {
                    "requests": float(row["Request Count"]),
                    "failures": float(row["Failure Count"]),
                    "rps": float(row["Requests/s"]),
                    "p50_ms": float(row["50%"] or "nan"),
                    "p99_ms": float(row["99%"] or "nan"),
                }
    return {}


def _preflight(host: str) -> None:
    import httpx

    try:
        httpx.get(host.rstrip("/") + "/v2/health/live", timeout=5.0)
    except httpx.HTTPError as err:
        raise LoadTestError(f"cannot reach {host}: {type(err).__name__}: {err}") from err


def _run_locust(cmd: list[str], *, env: dict[str, str], log_path: Path, duration_s: float) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with (
        log_path.open("wb") as log,
        Progress(
            TextColumn("[bold]locust[/]"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as progress,
    ):
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        task = progress.add_task("starting", total=duration_s)
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - t0
                progress.update(
                    task,
                    completed=min(elapsed, duration_s),
                    description="running" if elapsed < duration_s else "finishing",
                )
                time.sleep(0.2)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            raise
        return proc.returncode


def run(
    config: RunConfig,
    *,
    locustfile: Path,
    data: Path,
    processes: int = 1,
    rate_per_user: float = 0.0,
    input_name: str = "input",
    version: str | None = None,
    rows: int = 1,
) -> dict[str, Any]:
    """Run Locust, gate the exact times, write ``summary.json``; return the summary dict."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("exact-*.npz"):
        stale.unlink()
    env = dict(os.environ)
    env.update(
        {
            "FERRYMAN_LT_PROTOCOL": config.protocol,
            "FERRYMAN_LT_MODEL": config.model,
            "FERRYMAN_LT_INPUT": input_name,
            "FERRYMAN_LT_VERSION": version or "",
            "FERRYMAN_LT_DATA": str(data),
            "FERRYMAN_LT_ROWS": str(rows),
            "FERRYMAN_LT_RATE": str(rate_per_user),
            "FERRYMAN_LT_SHAPE": "" if config.shape == "none" else config.shape,
            "FERRYMAN_LT_TIMES_DIR": str(out.resolve()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    _preflight(config.host)
    log_path = out / "locust.log"
    code = _run_locust(
        locust_command(config=config, locustfile=locustfile, processes=processes),
        env=env,
        log_path=log_path,
        duration_s=config.duration_s,
    )
    times, failures = load_exact_times(out)
    if code != 0 or times.size == 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise LoadTestError(
            f"locust exited with code {code} after {times.size} request(s); log {log_path}:\n{tail}"
        )
    summary = budget.summarize(times, failures=failures)
    verdict = budget.evaluate(summary, budget_ms=config.budget_ms, max_error_rate=config.max_error_rate)
    locust_stats = read_locust_aggregate(out / "locust_stats.csv")
    result: dict[str, Any] = {
        "host": config.host,
        "protocol": config.protocol,
        "model": config.model,
        "shape": config.shape,
        "users": config.users,
        "spawn_rate": config.spawn_rate,
        "duration_s": config.duration_s,
        "budget_ms": config.budget_ms,
        "max_error_rate": config.max_error_rate,
        "exact": summary.as_dict(),
        "locust": locust_stats,
        # From the exact count: in distributed mode Locust's CSV misses the workers' last reports.
        "rps": summary.requests / config.duration_s,
        "passed": verdict.passed,
        "reasons": list(verdict.reasons),
        "reports": {
            "csv": str(out / "locust_stats.csv"),
            "html": str(out / "report.html"),
            "log": str(log_path),
        },
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def summary_table(result: dict[str, Any]) -> Table:
    exact = result["exact"]
    locust_p99 = result["locust"].get("p99_ms")
    ok = result["passed"]
    table = Table(title=f"load test: {result['protocol']} {result['shape']} against {result['host']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    table.add_row("requests", f"{exact['requests']:,}", "")
    table.add_row("throughput", f"{result['rps']:,.1f} req/s", "")
    table.add_row(
        "errors", f"{exact['failures']:,} ({exact['error_rate']:.2%})", f"{result['max_error_rate']:.2%}"
    )
    for q in ("p50", "p90", "p95"):
        table.add_row(f"{q} (exact)", f"{exact[q + '_ms']:.2f} ms", "")
    table.add_row("p99 (exact)", f"[bold]{exact['p99_ms']:.2f} ms[/]", f"{result['budget_ms']:g} ms")
    if locust_p99 is not None:
        table.add_row("p99 (Locust, rounded)", f"{locust_p99:g} ms", "")
    table.add_row("max", f"{exact['max_ms']:.2f} ms", "")
    table.add_row("verdict", "[green]PASS[/]" if ok else "[red]FAIL[/]", "")
    return table


def _command(args: argparse.Namespace) -> int:
    config = RunConfig(
        host=args.host,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=parse_duration(args.duration),
        budget_ms=args.budget_ms,
        max_error_rate=args.max_error_rate,
        protocol=args.protocol,
        model=args.model,
        shape=args.shape,
        out=Path(args.out),
    )
    result = run(
        config,
        locustfile=find_locustfile(args.locustfile),
        data=ensure_data(args.data),
        processes=args.processes,
        rate_per_user=args.rate_per_user,
        input_name=args.input_name,
        version=args.model_version,
        rows=args.rows,
    )
    console = Console()
    console.print(summary_table(result))
    for reason in result["reasons"]:
        console.print(f"[red]budget gate failed:[/] {reason}")
    console.print(
        f"reports: {result['reports']['html']}, {Path(args.out) / 'locust_stats.csv'}, "
        f"{Path(args.out) / 'summary.json'}"
    )
    return EXIT_PASSED if result["passed"] else EXIT_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="run the Locust scenarios headless and gate p99 / error rate on a budget",
        description="Exit codes: 0 within budget, 1 budget or error rate exceeded, 2 could not run.",
    )
    p.add_argument("--host", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--users", type=int, default=10, help="concurrent simulated users (default 10)")
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second (default 10)")
    p.add_argument("--duration", default="30s", help="run time: 90, 30s, 2m, 1m30s (default 30s)")
    p.add_argument("--budget-ms", type=float, default=100.0, help="p99 latency budget in ms (default 100)")
    p.add_argument(
        "--max-error-rate", type=float, default=0.01, help="maximum failed fraction (default 0.01)"
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="v2")
    p.add_argument("--model", default="breast-cancer")
    p.add_argument("--model-version", default=None, help="pin a version (/versions/{v}); default: routed")
    p.add_argument("--input-name", default="input", help="the model's input tensor (default input)")
    p.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    p.add_argument(
        "--shape",
        choices=SHAPES,
        default="steady",
        help="steady, ramp (to the knee), spike, or none (Locust's plain -u/-r/-t)",
    )
    p.add_argument(
        "--rate-per-user",
        type=float,
        default=0.0,
        help="requests/s per user (constant throughput); 0 = back to back",
    )
    p.add_argument("--processes", type=int, default=1, help="Locust worker processes (default 1)")
    p.add_argument(
        "--data", default=None, help="traffic.npy or an examples directory (default: cached export)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"report directory (default {DEFAULT_OUT})")
    p.add_argument("--locustfile", default=None, help="default: loadtests/locustfile.py of the checkout")
    p.set_defaults(func=_command)


cli_main.EXTENSIONS.append(register)
