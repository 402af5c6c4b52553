"""``python -m loadtests.operator_scale``: the operator at N ModelDeployments (``make bench-operator``).

Each N gets a fresh KWOK-only control plane in its own run directory (never the real node), torn down
afterwards. ``--before SRC`` also measures another checkout's operator (its ``operators/`` directory goes
first on PYTHONPATH), e.g. ``git worktree add /tmp/before <commit>`` then ``--before /tmp/before/operators``.
Results go to ``--json`` (appended by N and label, so sizes can be run one at a time) and ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferryman.processes import free_port
from loadtests.operator_scale.cluster import cluster
from loadtests.operator_scale.measure import measure
from loadtests.operator_scale.report import render


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.operator_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default="10,100,300,1000", help="comma-separated N")
    p.add_argument("--nodes", type=int, default=32, help="KWOK nodes")
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the quiet window")
    p.add_argument("--settle", type=float, default=35.0, help="seconds after Ready before the quiet window")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for convergence")
    p.add_argument(
        "--before", type=Path, default=None, help="another checkout's operators/ directory to measure too"
    )
    p.add_argument("--only-before", action="store_true", help="measure only --before")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="operator setting for the measured operator (repeatable), e.g. FERRYMAN_WORKERS=4",
    )
    p.add_argument("--label", default="after", help="name of the measured operator's rows")
    p.add_argument(
        "--run-dir", type=Path, default=None, help="parent of the run directories (default: a temp dir)"
    )
    p.add_argument("--json", type=Path, default=Path(".cache/operator-scale.json"))
    p.add_argument("--out", type=Path, default=Path("docs/operator-scale.md"))
    p.add_argument("--render", action="store_true", help="only render --out from --json (no measurement)")
    args = p.parse_args(argv)
    if args.render:
        doc = json.loads(args.json.read_text())
        args.out.write_text(
            render(
                doc["results"],
                nodes=doc["nodes"],
                namespaces=args.namespaces,
                idle=args.idle,
                settle=args.settle,
                machine=doc["machine"],
            )
        )
        print(f"wrote {args.out}")
        return 0

    base = args.run_dir or Path(tempfile.mkdtemp(prefix="ferryman-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    if args.json.is_file():
        for r in json.loads(args.json.read_text()).get("results", []):
            results[f"{r['label']}:{r['n']}"] = r
    env = dict(item.split("=", 1) for item in args.env)
    runs: list[tuple[str, Path | None]] = [] if args.only_before else [(args.label, None)]
    if args.before is not None:
        runs.insert(0, ("before", args.before.resolve()))
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        for label, source in runs:
            run_dir = base / f"{label}-{n}"
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"== N={n} ({label}): cluster in {run_dir}", flush=True)
            with cluster(run_dir, nodes=args.nodes) as c:
                result = asyncio.run(
                    measure(
                        c,
                        n=n,
                        namespaces=args.namespaces,
                        label=label,
                        source=source,
                        idle=args.idle,
                        settle=args.settle,
                        timeout=args.timeout,
                        port=free_port(),
                        log_dir=base,
                        env=env if source is None else {},
                    )
                )
            doc = result.to_dict()
            print(json.dumps(doc), flush=True)
            results[f"{label}:{n}"] = doc
            args.json.parent.mkdir(parents=True, exist_ok=True)
            ordered = sorted(results.values(), key=lambda r: (r["n"], r["label"] != "before"))
            args.json.write_text(
                json.dumps({"machine": machine(), "nodes": args.nodes, "results": ordered}, indent=1)
            )
            args.out.write_text(
                render(
                    ordered,
                    nodes=args.nodes,
                    namespaces=args.namespaces,
                    idle=args.idle,
                    settle=args.settle,
                    machine=machine(),
                )
            )
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
