"""The knee finder: the highest request rate at which p99 stays within the latency budget.

The offered load is stepped by doubling wrk's connection count (1, 2, 4, ...): each step runs a few seconds
and records throughput, exact p99 (wrk's 1 µs histogram) and the error rate. The search stops when a step
breaks the budget or the error limit, when throughput has stopped growing (saturation: more connections
only add queueing), or at ``max_connections``. The knee is the fastest step that stayed within both.
wrk is closed loop, so at the knee the server is busy but not yet queueing beyond the budget.

``python -m loadtests.knee --host URL [--protocols v2,v2-binary,v1] [--rows 1,32] [--budget-ms 100]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loadtests import payloads, wrk

PLATEAU = 0.03  # a step must beat the best rate so far by 3 % to count as growth
PATIENCE = 2  # steps without growth before calling it saturated


@dataclass(frozen=True, slots=True)
class Step:
    connections: int
    rps: float
    p99_ms: float
    error_rate: float
    requests: int


def within(step: Step, *, budget_ms: float, max_error_rate: float) -> bool:
    return step.requests > 0 and step.p99_ms <= budget_ms and step.error_rate <= max_error_rate


def knee(steps: Sequence[Step], *, budget_ms: float, max_error_rate: float) -> Step | None:
    """The fastest step within budget and error limit (None when not even the first one was)."""
    ok = [s for s in steps if within(s, budget_ms=budget_ms, max_error_rate=max_error_rate)]
    return max(ok, key=lambda s: s.rps) if ok else None


def next_connections(
    steps: Sequence[Step], *, budget_ms: float, max_error_rate: float, max_connections: int
) -> int | None:
    """The next step's connection count, or None when the search is over."""
    if not steps:
        return 1
    last = steps[-1]
    if not within(last, budget_ms=budget_ms, max_error_rate=max_error_rate):
        return None
    if last.connections >= max_connections:
        return None
    best_before = 0.0
    stalled = 0
    for s in steps:
        if s.rps > best_before * (1 + PLATEAU):
            best_before = s.rps
            stalled = 0
        else:
            stalled += 1
    if stalled >= PATIENCE:
        return None
    return min(last.connections * 2, max_connections)


def find(
    measure: Callable[[int], Step], *, budget_ms: float, max_error_rate: float, max_connections: int = 1024
) -> tuple[list[Step], Step | None]:
    """Step the load with ``measure(connections)`` until the search is over; return (steps, knee)."""
    steps: list[Step] = []
    while (
        c := next_connections(
            steps, budget_ms=budget_ms, max_error_rate=max_error_rate, max_connections=max_connections
        )
    ) is not None:
        steps.append(measure(c))
    return steps, knee(steps, budget_ms=budget_ms, max_error_rate=max_error_rate)


def wrk_measure(
    base_url: str, payload: payloads.Payload, *, seconds: float, tick: Callable[[float], None] | None = None
) -> Callable[[int], Step]:
    def measure(connections: int) -> Step:
        r = wrk.run(
            base_url,
            payload,
            duration_s=seconds,
            connections=connections,
            tick=tick,
            timeout_s=max(2.0, seconds),
        )
        return Step(
            connections=connections, rps=r.rps, p99_ms=r.p99_ms, error_rate=r.error_rate, requests=r.requests
        )

    return measure


def find_knees(
    host: str,
    *,
    configurations: Sequence[tuple[str, int]],
    rows: Any,
    model: str,
    budget_ms: float,
    max_error_rate: float,
    step_seconds: float,
    max_connections: int,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """One knee per (protocol, rows per request) configuration."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=True,
    ) as progress:
        return [
            _find_one(
                host,
                protocol=protocol,
                rows_per_request=n,
                rows=rows,
                model=model,
                budget_ms=budget_ms,
                max_error_rate=max_error_rate,
                step_seconds=step_seconds,
                max_connections=max_connections,
                progress=progress,
            )
            for protocol, n in configurations
        ]


def _find_one(
    host: str,
    *,
    protocol: str,
    rows_per_request: int,
    rows: Any,
    model: str,
    budget_ms: float,
    max_error_rate: float,
    step_seconds: float,
    max_connections: int,
    progress: Progress,
) -> dict[str, Any]:
    payload = payloads.sample(
        rows, protocol=protocol, model=model, rows_per_request=rows_per_request, count=1
    )[0]
    label = f"{protocol}, {rows_per_request} row(s)"
    task = progress.add_task(label, total=step_seconds)

    def tick(elapsed: float) -> None:
        progress.update(task, completed=min(elapsed, step_seconds))

    base = wrk_measure(host, payload, seconds=step_seconds, tick=tick)

    def measure(connections: int) -> Step:
        progress.update(task, description=f"knee {label}: {connections} connection(s)", completed=0)
        return base(connections)

    steps, best = find(
        measure, budget_ms=budget_ms, max_error_rate=max_error_rate, max_connections=max_connections
    )
    progress.remove_task(task)
    return {
        "protocol": protocol,
        "rows_per_request": rows_per_request,
        "budget_ms": budget_ms,
        "max_error_rate": max_error_rate,
        "knee": asdict(best) if best else None,
        "knee_rows_per_s": best.rps * rows_per_request if best else None,
        "steps": [asdict(s) for s in steps],
    }


def knee_table(
    results: list[dict[str, Any]], *, title: str = "knee: highest rate with p99 within budget"
) -> Table:
    table = Table(title=title)
    for col in ("configuration", "knee req/s", "rows/s", "connections", "p99 ms at knee", "steps"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in results:
        k = r["knee"]
        config = f"{r['protocol']}, {r['rows_per_request']} row(s)/request"
        if k is None:
            table.add_row(config, "[red]none within budget[/]", "", "", "", str(len(r["steps"])))
        else:
            table.add_row(
                config,
                f"{k['rps']:,.0f}",
                f"{r['knee_rows_per_s']:,.0f}",
                str(k["connections"]),
                f"{k['p99_ms']:.2f}",
                str(len(r["steps"])),
            )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.knee",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", required=True)
    p.add_argument("--protocols", default="v2,v2-binary,v1")
    p.add_argument("--rows", default="1", help="rows per request, comma-separated (default 1)")
    p.add_argument("--model", default=payloads.DEFAULT_MODEL)
    p.add_argument("--data", required=True, help="traffic.npy or an examples directory")
    p.add_argument("--budget-ms", type=float, default=100.0)
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--step-seconds", type=float, default=3.0)
    p.add_argument("--max-connections", type=int, default=1024)
    p.add_argument("--json", type=Path, default=None, help="write the steps and knees here")
    args = p.parse_args(argv)
    configurations = [
        (proto.strip(), int(n)) for proto in args.protocols.split(",") for n in args.rows.split(",")
    ]
    results = find_knees(
        args.host,
        configurations=configurations,
        rows=payloads.load_rows(args.data),
        model=args.model,
        budget_ms=args.budget_ms,
        max_error_rate=args.max_error_rate,
        step_seconds=args.step_seconds,
        max_connections=args.max_connections,
    )
    Console().print(knee_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
