"""The benchmark's compute-bound section: a model that costs milliseconds a row, where batching pays.

``python -m loadtests.bench.compute [--quick] [--out docs/benchmarks.md]`` (part of ``make bench``).

The model is ``ferryman examples export --model digits-mlp`` (a wide MLP: milliseconds for one row alone on
one core, a fraction of that per row in a batch), stable version v1. Every contender is started on its own,
warmed up, then driven by ``wrk -t1`` with one fixed 1-row v2 JSON request at 1, 8, 32 and 64 connections
(closed loop; a request is one row, so req/s = rows/s). ferryman's mean batch size is read from its own
``ferryman_batch_size`` histogram before and after each load level; Ray's ``@serve.batch`` contender counts
its batches itself (``GET /stats``). The limit is raw ONNX Runtime in-process at its best batch size with
the same intra-op thread count as the servers' sessions.

Batching's cost at 1 connection (a few percent of a run's latency) is smaller than this shared host's drift
between two separate runs, so it is also measured interleaved: the plain and the batched servers up at once,
short ``wrk -c1`` runs on one then the other, the order alternating; the median ratio over the pairs is the
figure held against the target (:func:`interleaved_cost`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from rich.console import Console

from ferryman.batching import default_threads
from loadtests import payloads, wrk
from loadtests.bench import compute_report, machine
from loadtests.bench.contenders import (
    BenchContext,
    FastApi,
    FerrymanGateway,
    FerrymanNative,
    KServeStock,
    ProcessContender,
    _contender_module,
    _model_args,
    _module_missing,
)
from loadtests.bench.harness import REPO_ROOT, check_answer
from loadtests.bench.rawort import measure as raw_measure
from loadtests.servers import HOST, ServerFailed, ferryman_argv

MODEL = "digits-mlp"
RAW_BATCH_SIZES = (1, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Settings:
    duration_s: float = 12.0
    warmup_s: float = 4.0
    connections: tuple[int, ...] = (1, 8, 32, 64)
    raw_seconds: float = 3.0  # per batch size of the in-process limit
    rounds: int = 3  # each contender is started and measured this many times; per level the best round counts
    # (as in the main bench: interference only ever slows a run down; at 32 connections the same code gave
    # 2,764-3,723 rows/s in runs of one afternoon)
    pairs: int = 10  # interleaved plain/batched pairs at 1 connection (interleaved_cost)
    pair_seconds: float = 4.0  # wrk's run on each server of a pair
    quick: bool = False


QUICK = Settings(
    duration_s=5.0, warmup_s=2.0, raw_seconds=1.5, rounds=1, pairs=4, pair_seconds=2.0, quick=True
)


# -- contenders -------------------------------------------------------------------------------------
class NativeBatched(FerrymanNative):
    name, label = "ferryman-batched", "ferryman serve SPEC, spec.batching on (maxBatchSize 32, maxDelayMs 0)"
    metrics_batches = True


class NativePlain(FerrymanNative):
    name, label = "ferryman-plain", "ferryman serve SPEC, batching removed from the spec"

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return _serve(ctx.spec_variant("plain", batching=None), port)


class NativeBatchedTwoThreads(FerrymanNative):
    name, label = (
        "ferryman-batched-t2",
        "ferryman serve SPEC, batching on, 2 intra-op threads (batching.threads)",
    )
    metrics_batches = True

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return _serve(
            ctx.spec_variant("t2", batching={"maxBatchSize": 32, "maxDelayMs": 0, "threads": 2}), port
        )


def _serve(spec: Path, port: int) -> list[str]:
    return [*ferryman_argv(), "serve", str(spec), "--host", HOST, "--port", str(port)]


class GatewayBatched(FerrymanGateway):
    name, label = "ferryman-gateway-batched", "ferryman up SPEC: gateway (static to v1), batching on"
    metrics_batches = True

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return self._up(
            ctx, ctx.spec_variant("static", traffic={"strategy": "static", "candidate": None}), port
        )


class RayBatch(ProcessContender):
    name, label, group = (
        "ray-serve-batch",
        "Ray Serve, @serve.batch (32, 2 ms), local Ray with 2 CPUs",
        "peer",
    )
    startup_timeout = 300.0
    start_attempts = 2
    once = True
    stats_path = "/stats"

    def unavailable(self, ctx: BenchContext) -> str | None:
        return _module_missing("ray.serve")

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*_contender_module("ray_batch"), *_model_args(ctx, port)]


class KServe(KServeStock):
    label = "stock KServe ModelServer, custom kserve.Model with the same ORT session (no batching)"


class FastApiOrt(FastApi):
    label = "FastAPI + ORT in the handler (no batching)"


CONTENDERS: dict[str, type[ProcessContender]] = {
    c.name: c
    for c in (
        NativeBatched,
        NativePlain,
        GatewayBatched,
        NativeBatchedTwoThreads,
        RayBatch,
        KServe,
        FastApiOrt,
    )
}


# -- measuring --------------------------------------------------------------------------------------
def batch_counts(contender: ProcessContender) -> tuple[float, float] | None:
    """(batches, requests) counted so far by the server, or None when it does not count them."""
    try:
        if getattr(contender, "metrics_batches", False):
            text = httpx.get(f"{contender.url}/metrics", timeout=10).text
            return _histogram_totals(text, "ferryman_batch_size", model=MODEL, version="v1")
        path = getattr(contender, "stats_path", None)
        if path:
            doc = httpx.get(f"{contender.url}{path}", timeout=10).json()
            return float(doc["batches"]), float(doc["requests"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return None


def _histogram_totals(text: str, name: str, **labels: str) -> tuple[float, float] | None:
    """(count, sum) of one histogram series in a Prometheus exposition."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    count = total = None
    for line in text.splitlines():
        if line.startswith(f"{name}_count{{") and want in line:
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum{{") and want in line:
            total = float(line.rsplit(" ", 1)[1])
    return (count, total) if count is not None and total is not None else None


def mean_batch(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def raw_limit(model_path: Path, rows: np.ndarray, *, seconds: float, threads: int) -> dict[str, Any]:
    """In-process ``session.run`` at each batch size (same session options, ``threads`` intra-op threads)."""
    sweep = []
    for size in RAW_BATCH_SIZES:
        batch = np.ascontiguousarray(np.resize(rows, (size, rows.shape[1])), dtype=np.float32)
        r = raw_measure(str(model_path), batch, duration_s=seconds, threads=threads)
        sweep.append(
            {"batch_size": size, "rows_per_s": r["rows_per_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}
        )
    best = max(sweep, key=lambda e: e["rows_per_s"])
    return {
        "name": "raw-ort",
        "label": f"raw ONNX Runtime in-process, best batch size ({threads} thread)",
        "group": "limit",
        "status": "ok",
        "sweep": sweep,
        "best": best,
        "threads": threads,
    }


def measure(
    contender: ProcessContender, ctx: BenchContext, settings: Settings, console: Console
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": contender.name,
        "label": contender.label,
        "group": contender.group,
        "status": "ok",
        "error": None,
        "levels": [],
    }
    reason = contender.unavailable(ctx)
    if reason:
        entry.update(status="n/a", error=reason)
        return entry
    single = payloads.build(ctx.rows[:1], protocol="v2", model=ctx.model_name)
    try:
        for attempt in range(1, contender.start_attempts + 1):
            try:
                contender.start(ctx)
                break
            except ServerFailed:
                contender.stop()
                if attempt == contender.start_attempts:
                    raise
        entry["startup_s"] = round(contender.startup_seconds, 2)
        check_answer(contender.url, single)
        for connections in settings.connections:
            console.print(f"  {contender.name}: {connections} connection(s)")
            wrk.run(contender.url, single, duration_s=settings.warmup_s, connections=connections)
            before = batch_counts(contender)
            result = wrk.run(contender.url, single, duration_s=settings.duration_s, connections=connections)
            after = batch_counts(contender)
            level = {**result.as_dict(), "rows_per_s": result.rps, "mean_batch": mean_batch(before, after)}
            entry["levels"].append(level)
    except Exception as err:  # a contender's failure is a result, not a crash
        entry.update(
            status="failed",
            error=f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
        )
        tail = contender.output()
        if tail:
            entry["output_tail"] = tail[-3000:]
        console.print(f"[red]{contender.name} failed:[/] {entry['error']}")
    finally:
        contender.stop()
    return entry


def interleaved_cost(ctx: BenchContext, settings: Settings, console: Console) -> dict[str, Any]:
    """Batching's latency cost at 1 connection, from interleaved pairs: ``ferryman-plain`` and
    ``ferryman-batched`` both up, each warmed up, then ``settings.pairs`` times ``wrk -c1`` for
    ``pair_seconds`` on one and then the other (who goes first alternates). The entry's ``cost`` is
    :func:`compute_report.paired_cost` of the pairs' p50s."""
    entry: dict[str, Any] = {
        "name": compute_report.PAIRED,
        "label": "ferryman-batched vs ferryman-plain at 1 connection, interleaved",
        "group": "paired",
        "status": "ok",
        "error": None,
        "pair_seconds": settings.pair_seconds,
        "pairs": [],
    }
    single = payloads.build(ctx.rows[:1], protocol="v2", model=ctx.model_name)
    servers: list[ProcessContender] = [NativePlain(), NativeBatched()]
    try:
        for server in servers:
            server.start(ctx)
            check_answer(server.url, single)
            wrk.run(server.url, single, duration_s=settings.warmup_s, connections=1)
        for i in range(settings.pairs):
            order = servers if i % 2 == 0 else servers[::-1]
            p50: dict[str, float] = {}
            for server in order:
                result = wrk.run(server.url, single, duration_s=settings.pair_seconds, connections=1)
                if result.non_2xx or result.socket_errors:
                    raise RuntimeError(f"{server.name}: errors at 1 connection")
                p50[server.name] = result.p50_ms
            entry["pairs"].append(
                {
                    "first": order[0].name,
                    "plain_p50_ms": p50[NativePlain.name],
                    "batched_p50_ms": p50[NativeBatched.name],
                }
            )
            console.print(
                f"  pair {i + 1}/{settings.pairs}: plain {p50[NativePlain.name]:.3f} ms, "
                f"batched {p50[NativeBatched.name]:.3f} ms"
            )
        entry["cost"] = compute_report.paired_cost(entry["pairs"])
    except Exception as err:  # a failure is a result, not a crash
        entry.update(status="failed", error=f"{type(err).__name__}: {str(err)[:300]}")
        console.print(f"[red]interleaved pairs failed:[/] {entry['error']}")
    finally:
        for server in servers:
            server.stop()
    return entry


def best_levels(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from a contender's rounds: per connection count, the round with the most rows/s (other work
    on the machine only ever slows a run down); a failed round makes the entry that failure."""
    bad = [e for e in rounds if e["status"] != "ok"]
    if bad:
        return bad[0]
    merged = dict(rounds[0])
    levels = []
    for i, first in enumerate(rounds[0]["levels"]):
        same = [e["levels"][i] for e in rounds if i < len(e["levels"])]
        best = max(same, key=lambda lv: lv["rows_per_s"])
        levels.append({**best, "rounds_rows_per_s": [lv["rows_per_s"] for lv in same]})
        assert best["connections"] == first["connections"]
    merged["levels"] = levels
    return merged


def prepare(workdir: Path) -> BenchContext:
    """Export ``digits-mlp`` once into ``workdir/compute`` (the canary parked: the bench measures v1)."""
    import os

    from ferryman.examples import export_example

    directory = workdir / "compute"
    spec = directory / "deployment.yaml"
    if not (
        spec.is_file()
        and (directory / "traffic.npy").is_file()
        and (directory / "models/v1/model.onnx").is_file()
    ):
        export_example(MODEL, directory, interval_seconds=3600.0, min_requests=1_000_000)
    doc = yaml.safe_load(spec.read_text())
    if not doc["spec"].get("batching"):
        raise RuntimeError(f"{spec}: the {MODEL} example should turn batching on")
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return BenchContext(
        workdir=directory,
        spec=spec,
        model_path=directory / "models/v1/model.onnx",
        model_name=MODEL,
        rows=payloads.load_rows(directory),
        repo_root=REPO_ROOT,
        env={"PYTHONPATH": pythonpath},
    )


def run(
    ctx: BenchContext,
    settings: Settings,
    names: Sequence[str],
    *,
    console: Console,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    about = machine.describe()
    threads = default_threads()
    console.print(f"[bold]raw-ort[/]: batch sizes {RAW_BATCH_SIZES}, {threads} intra-op thread(s)")
    entries = [raw_limit(ctx.model_path, ctx.rows, seconds=settings.raw_seconds, threads=threads)]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(max(1, settings.rounds)):
        for name in names:
            if r > 0 and (CONTENDERS[name].once or rounds[name][0]["status"] != "ok"):
                continue  # slow to start (Ray), missing or broken: measured once
            console.print(f"[bold]{name}[/] (round {r + 1})")
            rounds[name].append(measure(CONTENDERS[name](), ctx, settings, console))
    entries += [best_levels(rounds[name]) for name in names]
    if {NativePlain.name, NativeBatched.name} <= set(names):
        console.print(f"[bold]1 connection, interleaved[/]: {settings.pairs} pairs")
        entries.append(interleaved_cost(ctx, settings, console))
    about["load_average_after"] = machine.load_average()
    doc: dict[str, Any] = {
        "schema": 1,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": settings.quick,
        "machine": about,
        "settings": {
            **asdict(settings),
            "model": f"{MODEL} (ferryman examples; stable version v1)",
            "load_generator": "wrk -t1 -cN, closed loop",
            "rows_per_request": 1,
            "protocol": "v2 JSON",
            "ort_threads": threads,
        },
        "contenders": entries,
    }
    doc["comparisons"] = compute_report.compute(entries)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.compute",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs" / "benchmarks.md",
        help="Markdown report whose compute-bound section is replaced (or appended)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="raw results (default: benchmarks-compute.json beside --out)"
    )
    p.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"subset, in order: {', '.join(CONTENDERS)}"
    )
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / ".cache" / "bench")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only re-render the section of --out from an earlier run's JSON",
    )
    args = p.parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        doc["comparisons"] = compute_report.compute(doc["contenders"])
        args.out.write_text(
            compute_report.replace_section(args.out.read_text(), compute_report.markdown(doc))
        )
        return 0
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)} (known: {', '.join(CONTENDERS)})")
    settings = QUICK if args.quick else Settings()
    if args.duration is not None:
        settings = Settings(**{**asdict(settings), "duration_s": args.duration})
    console = Console(stderr=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"exporting {MODEL} (once; cached in {args.workdir / 'compute'})")
    ctx = prepare(args.workdir)
    doc = run(ctx, settings, names, console=console)
    json_path = args.json or args.out.with_name("benchmarks-compute.json")
    doc["json_name"] = json_path.name
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.is_file() else "# Benchmarks\n"
    args.out.write_text(compute_report.replace_section(old, compute_report.markdown(doc)))
    Console().print(compute_report.summary_table(doc))
    console.print(f"written: {args.out} (compute-bound section), {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
