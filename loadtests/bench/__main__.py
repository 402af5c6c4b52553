"""``python -m loadtests.bench [--quick] [--out docs/benchmarks.md]`` (``make bench`` / ``make bench-quick``).

Three sections: the HTTP-bound one (a ~10 us tree model: framing is the cost), the compute-bound one
(:mod:`loadtests.bench.compute`: a millisecond MLP, adaptive batching) and the gRPC one
(:mod:`loadtests.bench.grpc`: ghz against ferryman's and stock KServe's gRPC services, and our REST path).
``--no-compute`` / ``--no-grpc`` skip a section and keep the report's copy of it as it was;
``--only-compute`` / ``--only-grpc`` run that section only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from loadtests.bench import compute_report, contenders, grpc_report, report
from loadtests.bench.harness import QUICK, REPO_ROOT, Bench, Settings, prepare


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs (a few minutes in all)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md", help="Markdown report")
    p.add_argument("--json", type=Path, default=None, help="raw results (default: --out with .json)")
    p.add_argument(
        "--contenders",
        default=None,
        help=f"comma-separated subset, in order (default: all): {', '.join(contenders.REGISTRY)}",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds of load per contender")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per contender")
    p.add_argument("--batch-duration", type=float, default=None, help="seconds of 256-row batches")
    p.add_argument("--connections", type=int, default=None, help="wrk connections (default 16)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measure each contender this many times, best round counts (default 3; quick 2)",
    )
    p.add_argument("--no-batch", action="store_true", help="skip the 256-row batch runs")
    p.add_argument(
        "--workdir",
        type=Path,
        default=REPO_ROOT / ".cache" / "bench",
        help="where the sample models are exported",
    )
    p.add_argument("--list", action="store_true", help="list the contenders and exit")
    p.add_argument(
        "--no-compute", action="store_true", help="skip the compute-bound section (keep the old one)"
    )
    p.add_argument("--only-compute", action="store_true", help="run the compute-bound section only")
    p.add_argument("--no-grpc", action="store_true", help="skip the gRPC section (keep the old one)")
    p.add_argument("--only-grpc", action="store_true", help="run the gRPC section only")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    s = QUICK if args.quick else Settings()
    changes: dict[str, object] = {}
    for field, value in (
        ("duration_s", args.duration),
        ("warmup_s", args.warmup),
        ("batch_duration_s", args.batch_duration),
        ("connections", args.connections),
        ("rounds", args.rounds),
    ):
        if value is not None:
            changes[field] = value
    if args.no_batch:
        changes["batch"] = False
    return dataclasses.replace(s, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    if args.list:
        for name, cls in contenders.REGISTRY.items():
            console.print(f"{name:24} {cls.label}")
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.only_compute:
        return _compute(args, console)
    if args.only_grpc:
        return _grpc(args, console)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()] if args.contenders else None
    chosen = contenders.create(names)
    with console.status("exporting the sample models"):
        ctx = prepare(args.workdir)
    doc = Bench(ctx, settings_from(args), console=console).run(chosen)
    json_path = args.json or args.out.with_suffix(".json")
    doc["json_name"] = json_path.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    text = args.out.read_text() if args.out.is_file() else ""
    kept = [part for part in (compute_report.section_of(text), grpc_report.section_of(text)) if part]
    args.out.write_text(report.markdown(doc) + "".join("\n" + part for part in kept))
    out = Console()
    out.print(report.results_table(doc))
    out.print(report.ratios_table(doc))
    out.print(f"written: {args.out}, {json_path}")
    status = 0 if args.no_compute else _compute(args, console)
    return status or (0 if args.no_grpc else _grpc(args, console))


def _compute(args: argparse.Namespace, console: Console) -> int:
    from loadtests.bench import compute

    argv = ["--out", str(args.out), "--workdir", str(args.workdir)]
    if args.quick:
        argv.append("--quick")
    return compute.main(argv)


def _grpc(args: argparse.Namespace, console: Console) -> int:
    from loadtests.bench import grpc

    argv = ["--out", str(args.out), "--workdir", str(args.workdir)]
    if args.quick:
        argv.append("--quick")
    return grpc.main(argv)


if __name__ == "__main__":
    sys.exit(main())
