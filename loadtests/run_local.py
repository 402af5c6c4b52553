"""``make loadtest``: start ferryman locally, run the Locust scenarios through the budget gate, find the knee.

Exports the sample models (once, into ``.cache/loadtest/examples``), starts ``ferryman up`` on them (the
gateway with its canary rollout, metrics and drift; ``ferryman serve`` if ``up`` is not available) on a
free port, then runs three scenarios with ``ferryman loadtest``'s machinery: steady v2 JSON, a spike in v2
binary and a ramp in v1, each gated on p99 <= ``--budget-ms`` and the error rate. Then the knee finder per
protocol. Stops the server, prints the tables, writes ``.cache/loadtest/summary.json``; exits 1 when any
scenario broke the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ferryman.cli import loadtest
from ferryman.errors import FerrymanError
from loadtests import knee, payloads
from loadtests.servers import ServerProcess, local_ferryman

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "loadtest"


@dataclass(frozen=True)
class Scenario:
    name: str
    protocol: str
    shape: str
    users_factor: float  # of --users


SCENARIOS = (
    Scenario("steady-v2", "v2", "steady", 1.0),
    Scenario("spike-v2-binary", "v2-binary", "spike", 2.0),
    Scenario("ramp-v1", "v1", "ramp", 1.5),
)


def run_scenarios(
    server: ServerProcess,
    *,
    data: Path,
    users: int,
    duration_s: float,
    budget_ms: float,
    max_error_rate: float,
    console: Console,
) -> list[dict[str, Any]]:
    locustfile = loadtest.find_locustfile(ROOT / "loadtests" / "locustfile.py")
    results = []
    for sc in SCENARIOS:
        n = max(1, round(users * sc.users_factor))
        console.print(f"[bold]{sc.name}[/]: {n} users, {sc.shape}, {sc.protocol}, {duration_s:g} s")
        config = loadtest.RunConfig(
            host=server.url,
            users=n,
            spawn_rate=max(1.0, n / 2),
            duration_s=duration_s,
            budget_ms=budget_ms,
            max_error_rate=max_error_rate,
            protocol=sc.protocol,
            shape=sc.shape,
            out=WORK / sc.name,
        )
        result = loadtest.run(config, locustfile=locustfile, data=data)
        result["scenario"] = sc.name
        results.append(result)
    return results


def scenarios_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="load test scenarios (exact p99 from every request)")
    for col in ("scenario", "users", "requests", "req/s", "errors", "p50 ms", "p99 ms", "budget", "verdict"):
        table.add_column(col, justify="left" if col in ("scenario", "verdict") else "right")
    for r in results:
        e = r["exact"]
        verdict = "[green]PASS[/]" if r["passed"] else "[red]FAIL[/]: " + "; ".join(r["reasons"])
        table.add_row(
            r["scenario"],
            str(r["users"]),
            f"{e['requests']:,}",
            f"{r['rps']:,.0f}",
            f"{e['error_rate']:.2%}",
            f"{e['p50_ms']:.2f}",
            f"{e['p99_ms']:.2f}",
            f"{r['budget_ms']:g} ms",
            verdict,
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run_local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    p.add_argument("--budget-ms", type=float, default=100.0)
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--no-knee", action="store_true")
    p.add_argument("--knee-step-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    console = Console()
    examples = WORK / "examples"
    if not (examples / "deployment.yaml").is_file():
        from ferryman.examples import export

        with console.status("exporting the sample models"):
            export(examples)
    data = examples / "traffic.npy"
    server = local_ferryman(examples / "deployment.yaml", state_dir=WORK / "state")
    kind = server.argv[1] if len(server.argv) > 1 else "ferryman"
    with console.status(f"starting ferryman {kind}"):
        server.start()
    console.print(f"ferryman {kind} ready at {server.url} ({server.startup_seconds:.1f} s)")
    knees: list[dict[str, Any]] = []
    try:
        results = run_scenarios(
            server,
            data=data,
            users=args.users,
            duration_s=args.duration,
            budget_ms=args.budget_ms,
            max_error_rate=args.max_error_rate,
            console=console,
        )
        if not args.no_knee:
            knees = knee.find_knees(
                server.url,
                configurations=[(proto, 1) for proto in payloads.PROTOCOLS],
                rows=payloads.load_rows(data),
                model=payloads.DEFAULT_MODEL,
                budget_ms=args.budget_ms,
                max_error_rate=args.max_error_rate,
                step_seconds=args.knee_step_seconds,
                max_connections=1024,
            )
    finally:
        server.cleanup()
    console.print(scenarios_table(results))
    if knees:
        console.print(
            knee.knee_table(knees, title=f"knee: highest rate with p99 <= {args.budget_ms:g} ms (wrk)")
        )
    (WORK / "summary.json").write_text(
        json.dumps({"server": kind, "scenarios": results, "knees": knees}, indent=2, default=float) + "\n"
    )
    console.print(f"reports: {WORK}/<scenario>/report.html, {WORK / 'summary.json'}")
    return 0 if all(r["passed"] for r in results) else 1


def _main() -> int:
    try:
        return main()
    except FerrymanError as err:
        Console(stderr=True).print(f"[red]error:[/] {err}")
        return 2


if __name__ == "__main__":
    sys.exit(_main())
