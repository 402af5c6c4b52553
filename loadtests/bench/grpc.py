"""The benchmark's gRPC section: ferryman's v2 gRPC service against stock KServe's and against our REST path.

``python -m loadtests.bench.grpc [--quick] [--out docs/benchmarks.md]`` (part of ``make bench``).

The model is the HTTP-bound section's (the sample breast-cancer tree model, stable version v1; ~10 us of
compute: the transport is the cost). Each request is one row: a ``ModelInferRequest`` with raw contents
(what ``tritonclient.grpc`` sends) over gRPC, a 1-row v2 JSON request over REST, so rows/s = requests/s.
gRPC load comes from ghz (:mod:`loadtests.ghz`, built from its Go module), REST load from wrk; both closed
loop with 16 requests in flight (ghz: 16 concurrent streams on one HTTP/2 connection; wrk: 16 keep-alive
connections). The contenders, each started on its own and warmed up:

* ``ferryman serve SPEC --grpc-port`` (metrics and drift on, as deployed): gRPC, then REST on the same
  process;
* stock KServe ``ModelServer`` with its own gRPC server and a custom ``kserve.Model`` holding the same ONNX
  Runtime session (``loadtests/contenders/kserve_stock.py``).

Every contender is measured ``rounds`` times; per load the round with the most rows/s counts (other work on
the machine only ever slows a run down). Targets: ferryman gRPC >= 3x stock KServe gRPC and >= 0.8x
ferryman's own REST path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc as grpclib
import numpy as np
from rich.console import Console

from loadtests import ghz, payloads, wrk
from loadtests.bench import grpc_report, machine
from loadtests.bench.contenders import (
    BenchContext,
    FerrymanNative,
    KServeStock,
    ProcessContender,
    _contender_module,
    _model_args,
    _module_missing,
)
from loadtests.bench.harness import REPO_ROOT, check_answer, prepare
from loadtests.servers import HOST, ServerFailed, free_port

PROTO = REPO_ROOT / "runtimes" / "ferryman_runtimes" / "grpc" / "inference.proto"
CALL = "inference.GRPCInferenceService.ModelInfer"
STREAMS = 16


@dataclass(frozen=True)
class Settings:
    duration_s: float = 15.0
    warmup_s: float = 3.0
    streams: int = STREAMS
    rounds: int = 2
    quick: bool = False


QUICK = Settings(duration_s=6.0, warmup_s=2.0, rounds=1, quick=True)


# -- contenders --------------------------------------------------------------------------------------
class FerrymanGrpc(FerrymanNative):
    name, label = (
        "ferryman",
        "ferryman serve SPEC --grpc-port (native runtime, native gRPC transport; metrics + drift)",
    )
    grpc_port = 0
    transport = "native"

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        self.grpc_port = free_port()
        return [
            *super().argv(ctx, port),
            "--grpc-port",
            str(self.grpc_port),
            "--grpc-transport",
            self.transport,
        ]


class FerrymanGrpcio(FerrymanGrpc):
    name, label = (
        "ferryman-grpcio",
        "ferryman serve SPEC --grpc-port --grpc-transport grpcio (grpc.aio; metrics + drift)",
    )
    transport = "grpcio"


class KServeGrpc(KServeStock):
    name, label = (
        "kserve-stock",
        "stock KServe ModelServer + its gRPC server, custom kserve.Model (same ORT session)",
    )
    grpc_port = 0

    def unavailable(self, ctx: BenchContext) -> str | None:
        return _module_missing("kserve")

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        self.grpc_port = free_port()
        return [*super().argv(ctx, port), "--grpc-port", str(self.grpc_port)]


class GrpcCeiling(ProcessContender):
    name, label, group = (
        "grpcio-ceiling",
        "grpc.aio on uvloop, a fixed answer (no parsing, no model)",
        "limit",
    )
    grpc_port = 0

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        self.grpc_port = free_port()
        return [
            *_contender_module("grpc_ceiling"),
            *_model_args(ctx, port),
            "--grpc-port",
            str(self.grpc_port),
        ]


CONTENDERS: dict[str, tuple[type[ProcessContender], tuple[str, ...]]] = {
    "grpcio-ceiling": (GrpcCeiling, ("grpc",)),
    "ferryman": (FerrymanGrpc, ("grpc", "rest")),
    "ferryman-grpcio": (FerrymanGrpcio, ("grpc",)),
    "kserve-stock": (KServeGrpc, ("grpc",)),
}


# -- one request, checked ------------------------------------------------------------------------------
def infer_message(rows: np.ndarray, *, model: str) -> bytes:
    """A serialized ``ModelInferRequest``: ``rows`` as one FP32 input in raw contents."""
    from ferryman_runtimes.grpc import inference_pb2 as pb

    batch = np.ascontiguousarray(rows, dtype="<f4")
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[batch.tobytes()])
    request.inputs.add(name=payloads.DEFAULT_INPUT, datatype="FP32", shape=list(batch.shape))
    return request.SerializeToString()  # type: ignore[no-any-return]


def check_grpc(target: str, message: bytes) -> None:
    """One call: it must answer OK with outputs (a server that answers errors would measure nothing)."""
    from ferryman_runtimes.grpc import inference_pb2 as pb

    with grpclib.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{CALL.rsplit('.', 1)[0]}/ModelInfer",
            request_serializer=None,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            grpclib.channel_ready_future(channel).result(timeout=30)
            answer = call(message, timeout=30)
        except (grpclib.RpcError, grpclib.FutureTimeoutError) as err:
            raise RuntimeError(f"no gRPC answer from {target}: {err}") from err
    if not answer.outputs:
        raise RuntimeError(f"{target} answered without outputs")


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load(
    contender: ProcessContender, transport: str, ctx: BenchContext, settings: Settings, *, seconds: float
) -> dict[str, Any]:
    """One load run, with the CPU time the server process and the load generator spent per row."""
    pid = contender.server.process.pid if contender.server and contender.server.process else 0
    server0, client0 = _process_cpu_s(pid), _children_cpu_s()
    result = _drive(contender, transport, ctx, settings, seconds=seconds)
    server_s, client_s = _process_cpu_s(pid) - server0, _children_cpu_s() - client0
    answered = result["requests"] or 1
    return {
        **result,
        "server_cpu_us_per_row": 1e6 * server_s / answered,
        "client_cpu_us_per_row": 1e6 * client_s / answered,
    }


def _drive(
    contender: ProcessContender, transport: str, ctx: BenchContext, settings: Settings, *, seconds: float
) -> dict[str, Any]:
    if transport == "grpc":
        target = f"{HOST}:{contender.grpc_port}"  # type: ignore[attr-defined]
        g = ghz.run(
            target,
            infer_message(ctx.rows[:1], model=ctx.model_name),
            proto=PROTO,
            call=CALL,
            duration_s=seconds,
            concurrency=settings.streams,
        )
        return {
            **g.as_dict(),
            "rows_per_s": g.rps,
            "load_generator": f"ghz -c{settings.streams} --connections 1",
        }
    single = payloads.build(ctx.rows[:1], protocol="v2", model=ctx.model_name)
    w = wrk.run(contender.url, single, duration_s=seconds, connections=settings.streams)
    return {
        **w.as_dict(),
        "errors": w.non_2xx + w.socket_errors,
        "rows_per_s": w.rps,
        "load_generator": f"wrk -t1 -c{settings.streams}",
    }


def measure(name: str, ctx: BenchContext, settings: Settings, console: Console) -> dict[str, Any]:
    cls, transports = CONTENDERS[name]
    contender = cls()
    entry: dict[str, Any] = {
        "name": name,
        "label": contender.label,
        "status": "ok",
        "error": None,
        "loads": {},
    }
    reason = contender.unavailable(ctx)
    if reason:
        entry.update(status="n/a", error=reason)
        return entry
    try:
        try:
            contender.start(ctx)
        except ServerFailed:
            contender.stop()
            raise
        entry["startup_s"] = round(contender.startup_seconds, 2)
        if "rest" in transports:
            check_answer(contender.url, payloads.build(ctx.rows[:1], protocol="v2", model=ctx.model_name))
        check_grpc(f"{HOST}:{contender.grpc_port}", infer_message(ctx.rows[:1], model=ctx.model_name))  # type: ignore[attr-defined]
        for transport in transports:
            console.print(f"  {name}: {transport}, {settings.streams} in flight")
            _load(contender, transport, ctx, settings, seconds=settings.warmup_s)
            entry["loads"][transport] = _load(
                contender, transport, ctx, settings, seconds=settings.duration_s
            )
    except Exception as err:  # a contender's failure is a result, not a crash
        first = str(err).splitlines()[0][:300] if str(err) else ""
        entry.update(status="failed", error=f"{type(err).__name__}: {first}")
        tail = contender.output()
        if tail:
            entry["output_tail"] = tail[-3000:]
        console.print(f"[red]{name} failed:[/] {entry['error']}")
    finally:
        contender.stop()
    return entry


def best_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per transport, the round with the most rows/s; a failed round makes the entry that failure."""
    bad = [e for e in rounds if e["status"] != "ok"]
    if bad:
        return bad[0]
    merged = dict(rounds[0])
    merged["loads"] = {}
    for transport in rounds[0]["loads"]:
        same = [e["loads"][transport] for e in rounds if transport in e["loads"]]
        best = max(same, key=lambda load: load["rows_per_s"])
        merged["loads"][transport] = {**best, "rounds_rows_per_s": [load["rows_per_s"] for load in same]}
    return merged


def run(ctx: BenchContext, settings: Settings, names: Sequence[str], *, console: Console) -> dict[str, Any]:
    about = machine.describe()
    ghz.binary()  # built before any server starts (minutes on a new machine, not part of any measurement)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(max(1, settings.rounds)):
        for name in names:
            if r > 0 and rounds[name][0]["status"] != "ok":
                continue  # missing or broken: measured once
            console.print(f"[bold]{name}[/] (round {r + 1})")
            rounds[name].append(measure(name, ctx, settings, console))
    entries = [best_round(rounds[name]) for name in names]
    about["load_average_after"] = machine.load_average()
    doc: dict[str, Any] = {
        "schema": 1,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": settings.quick,
        "machine": about,
        "settings": {
            **asdict(settings),
            "model": f"{ctx.model_name} (ferryman examples; stable version v1)",
            "rows_per_request": 1,
            "ghz": ghz.VERSION,
            "grpc_request": "ModelInferRequest, 1 FP32 row in raw_input_contents",
            "rest_request": "v2 JSON, 1 row",
        },
        "contenders": entries,
    }
    doc["comparisons"] = grpc_report.compute(entries)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.grpc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs" / "benchmarks.md",
        help="Markdown report whose gRPC section is replaced (or appended)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="raw results (default: benchmarks-grpc.json beside --out)"
    )
    p.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"subset, in order: {', '.join(CONTENDERS)}"
    )
    p.add_argument("--duration", type=float, default=None, help="seconds of load per contender and transport")
    p.add_argument("--warmup", type=float, default=None)
    p.add_argument("--rounds", type=int, default=None)
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
        doc["comparisons"] = grpc_report.compute(doc["contenders"])
        args.out.write_text(grpc_report.replace_section(args.out.read_text(), grpc_report.markdown(doc)))
        return 0
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)} (known: {', '.join(CONTENDERS)})")
    settings = QUICK if args.quick else Settings()
    changes = {
        k: v
        for k, v in (("duration_s", args.duration), ("warmup_s", args.warmup), ("rounds", args.rounds))
        if v is not None
    }
    settings = Settings(**{**asdict(settings), **changes})
    console = Console(stderr=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ctx = prepare(args.workdir)
    doc = run(ctx, settings, names, console=console)
    json_path = args.json or args.out.with_name("benchmarks-grpc.json")
    doc["json_name"] = json_path.name
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    old = args.out.read_text() if args.out.is_file() else "# Benchmarks\n"
    args.out.write_text(grpc_report.replace_section(old, grpc_report.markdown(doc)))
    Console().print(grpc_report.summary_table(doc))
    console.print(f"written: {args.out} (gRPC section), {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
