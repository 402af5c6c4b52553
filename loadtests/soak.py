"""``make soak``: one long steady run against a local ferryman, gated like any load test, watching memory.

``python -m loadtests.soak --minutes 10 --out docs/soak.md``: starts ferryman (``up`` when available) on
the sample models, runs the steady v2 scenario for the whole time through the budget gate, samples the
server's resident memory every few seconds (a leak shows as steady growth), writes a Markdown summary and
exits 1 when the gate failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ferryman.cli import loadtest
from ferryman.errors import FerrymanError
from loadtests.run_local import ROOT, WORK
from loadtests.servers import ServerProcess, local_ferryman


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_memory(
    server: ServerProcess, stop: threading.Event, samples: list[tuple[float, float]], every_s: float = 5.0
) -> None:
    t0 = dt.datetime.now().timestamp()
    while not stop.wait(every_s):
        if server.process is None:
            return
        rss = rss_mib(server.process.pid)
        if rss is not None:
            samples.append((dt.datetime.now().timestamp() - t0, rss))


def rss_growth(samples: list[tuple[float, float]]) -> float | None:
    """Memory growth after warm-up: last sample minus the peak of the first quarter (start-up noise
    excluded)."""
    if len(samples) < 4:
        return None
    quarter = max(1, len(samples) // 4)
    return samples[-1][1] - max(s[1] for s in samples[:quarter])


def markdown(result: dict[str, Any], samples: list[tuple[float, float]], *, minutes: float, kind: str) -> str:
    e = result["exact"]
    lines = [
        "# Soak test",
        "",
        f"Latest run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `python -m loadtests.soak --minutes "
        f"{minutes:g}` against `ferryman {kind}` on the sample models, steady v2 JSON traffic from "
        f"{result['users']} Locust users.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| requests | {e['requests']:,} |",
        f"| throughput | {result['rps']:,.1f} req/s |",
        f"| errors | {e['failures']:,} ({e['error_rate']:.3%}) |",
        f"| p50 / p95 / p99 (exact) | {e['p50_ms']:.2f} / {e['p95_ms']:.2f} / {e['p99_ms']:.2f} ms |",
        f"| budget | p99 <= {result['budget_ms']:g} ms, errors <= {result['max_error_rate']:.2%} |",
        f"| verdict | {'PASS' if result['passed'] else 'FAIL: ' + '; '.join(result['reasons'])} |",
    ]
    if samples:
        first, last = samples[0][1], samples[-1][1]
        peak = max(s[1] for s in samples)
        lines += [f"| server RSS first / last / peak | {first:.0f} / {last:.0f} / {peak:.0f} MiB |"]
    growth = result.get("rss_growth_mib")
    if growth is not None:
        lines += [
            f"| RSS growth after warm-up | {growth:+.1f} MiB (bound {result['max_rss_growth_mib']:g} MiB) |"
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--budget-ms", type=float, default=100.0)
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "soak.md")
    p.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=64.0,
        help="fail when the server's resident memory grows more than this after the first quarter",
    )
    args = p.parse_args(argv)
    console = Console()
    examples = WORK / "examples"
    if not (examples / "deployment.yaml").is_file():
        from ferryman.examples import export

        with console.status("exporting the sample models"):
            export(examples)
    server = local_ferryman(examples / "deployment.yaml", state_dir=WORK / "soak-state")
    kind = server.argv[1] if len(server.argv) > 1 else "ferryman"
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    with console.status(f"starting ferryman {kind}"):
        server.start()
    sampler = threading.Thread(target=sample_memory, args=(server, stop, samples), daemon=True)
    sampler.start()
    try:
        config = loadtest.RunConfig(
            host=server.url,
            users=args.users,
            spawn_rate=max(1.0, args.users / 2),
            duration_s=args.minutes * 60,
            budget_ms=args.budget_ms,
            max_error_rate=args.max_error_rate,
            protocol="v2",
            shape="steady",
            out=WORK / "soak",
        )
        result = loadtest.run(
            config,
            locustfile=loadtest.find_locustfile(ROOT / "loadtests" / "locustfile.py"),
            data=examples / "traffic.npy",
        )
    except FerrymanError as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    finally:
        stop.set()
        server.cleanup()
    console.print(loadtest.summary_table(result))
    growth = rss_growth(samples)
    result["rss_growth_mib"] = growth
    result["max_rss_growth_mib"] = args.max_rss_growth_mib
    if growth is not None and growth > args.max_rss_growth_mib:
        result["passed"] = False
        result["reasons"] = [
            *result.get("reasons", []),
            f"server memory grew {growth:.0f} MiB (bound {args.max_rss_growth_mib:g} MiB)",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result, samples, minutes=args.minutes, kind=kind))
    console.print(f"written: {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
