"""The `ferryman` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from ferryman.errors import FerrymanError

console = Console(stderr=True)

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from ferryman.cli.runtimes import launcher

    scheme = "https" if args.tls_cert else "http"
    grpc = f" and gRPC on {args.host}:{args.grpc_port}" if args.grpc_port is not None else ""
    console.print(
        f"ferryman serve: loading {args.target}; then serving on {scheme}://{args.host}:{args.port}{grpc} "
        f"({args.workers} worker{'s' if args.workers != 1 else ''}; ready when GET /v2/health/ready "
        f"answers 200; Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    launcher("native")(
        args.target,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        **security_options(args),
        **grpc_options(args),
    )
    return 0


def add_grpc_flag(p: argparse.ArgumentParser) -> None:
    """--grpc-port (shared by `serve` and `up`): off unless given (docs/protocol.md, "gRPC")."""
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve the Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService) "
        "on this port (KServe's convention: 8081), on the same host, with the same routing, "
        "limits, API keys, TLS and metrics; off unless given",
    )
    p.add_argument(
        "--grpc-transport",
        choices=GRPC_TRANSPORTS,
        default=None,
        help="the gRPC server: native (ferryman's own HTTP/2 server for unary gRPC, the default: the "
        "faster, see docs/benchmarks.md) or grpcio (grpc.aio, the reference implementation)",
    )


GRPC_TRANSPORTS = ("native", "grpcio")
GRPC_TRANSPORT_ENV = "FERRYMAN_GRPC_TRANSPORT"  # read by ferryman_runtimes.grpc.server (workers inherit it)


def grpc_options(args: argparse.Namespace) -> dict[str, int]:
    """The launcher keyword for --grpc-port, only when given (launchers without gRPC take no such keyword).
    --grpc-transport goes by the environment, so every worker process and listener sees the same choice."""
    if getattr(args, "grpc_transport", None):
        os.environ[GRPC_TRANSPORT_ENV] = args.grpc_transport
    return {} if args.grpc_port is None else {"grpc_port": args.grpc_port}


def add_security_flags(p: argparse.ArgumentParser) -> None:
    """--api-keys, --tls-cert, --tls-key (shared by `serve` and `up`)."""
    p.add_argument(
        "--api-keys",
        default=None,
        metavar="PATH",
        help="require an API key on prediction endpoints: a file with one key per line, or a "
        "directory with one file per key (a mounted Secret); re-read when it changes",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve HTTPS with this certificate (PEM, chain allowed); re-read when it changes",
    )
    p.add_argument("--tls-key", default=None, metavar="FILE", help="the certificate's private key (PEM)")


def security_options(args: argparse.Namespace) -> dict[str, str | None]:
    return {"api_keys": args.api_keys, "tls_cert": args.tls_cert, "tls_key": args.tls_key}


def _examples_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ferryman.examples import EXAMPLES, export_example

    if args.model not in EXAMPLES:
        console.print(f"[red]error:[/] unknown example {args.model!r} (examples: {', '.join(EXAMPLES)})")
        return 2
    with console.status(f"training and exporting the {args.model} sample models"):
        result = export_example(args.model, args.directory)
    table = Table(title=f"{result.model} sample models in {result.directory}")
    table.add_column("version")
    table.add_column("file")
    table.add_column("test accuracy", justify="right")
    for v, p in result.versions.items():
        acc = result.accuracy[v]
        table.add_row(v, str(p), "n/a (random weights)" if acc != acc else f"{acc:.3f}")
    console.print(table)
    console.print(f"spec: [bold]{result.spec}[/]")
    return 0


def _examples_list(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferryman.examples import EXAMPLES

    out = Console()  # the list is the command's output: stdout
    for example in EXAMPLES.values():
        batching = "batching on" if example.batching else "no batching"
        out.print(f"[bold]{example.name}[/]  {example.description} ({batching})", soft_wrap=True)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ferryman.spec import load_deployment

    md = load_deployment(args.spec)
    checked = "schema only" if args.schema_only else "model files and reference data checked"
    if not args.schema_only:
        from ferryman.preflight import check_deployment

        problems = check_deployment(md)
        if problems:
            for problem in problems:
                console.print(f"[red]error:[/] {problem}", soft_wrap=True, highlight=False)
            console.print(
                f"[red]invalid[/] ModelDeployment {md.name!r}: {len(problems)} problem(s) that "
                f"`ferryman serve` and `ferryman up` would refuse",
                highlight=False,
            )
            return 2
    console.print(
        f"[green]valid[/] ModelDeployment {md.name!r}: {len(md.spec.versions)} version(s), "
        f"runtime {md.spec.runtime.value}, strategy {md.spec.traffic.strategy.value} ({checked})",
        highlight=False,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ferryman.demo import run

    return run(args.dir, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferryman", description="ONNX model serving with progressive delivery"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve", help="serve a spec (every version) or a single .onnx file with the native runtime"
    )
    p.add_argument("target", help="ModelDeployment YAML or .onnx file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-body-bytes", type=int, default=None)
    add_security_flags(p)
    add_grpc_flag(p)
    p.set_defaults(func=_serve)

    ex = sub.add_parser("examples", help="sample models").add_subparsers(
        dest="examples_command", required=True
    )
    p = ex.add_parser("export", help="train and export the sample models and a ready deployment.yaml")
    p.add_argument("directory", type=Path)
    p.add_argument(
        "--model",
        default="breast-cancer",
        help="which example (see `ferryman examples list`; default: breast-cancer)",
    )
    p.set_defaults(func=_examples_export)
    p = ex.add_parser("list", help="name the sample models")
    p.set_defaults(func=_examples_list)

    p = sub.add_parser(
        "validate",
        help="check a ModelDeployment spec as serve and up would: the schema, then every "
        "version's model file (fetch, sha256, ONNX, opset) and drift reference data",
    )
    p.add_argument("spec", type=Path)
    p.add_argument(
        "--schema-only",
        action="store_true",
        help="check the spec's fields only; fetch and load nothing (e.g. in CI without the model files)",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser("demo", help="the main job end to end: export, serve, canary under load, report")
    p.add_argument("--dir", type=Path, default=Path(".cache/demo"))
    p.add_argument("--timeout", type=float, default=180.0)
    p.set_defaults(func=_demo)

    for register in EXTENSIONS:
        register(sub)
    return parser


# Later command groups (up/status/promote..., loadtest, crd) append a `register(subparsers)` here.
EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_extensions()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except FerrymanError as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    except KeyboardInterrupt:
        return 130


def _load_extensions() -> None:
    import importlib

    for module in (
        "ferryman.cli.local",
        "ferryman.cli.loadtest",
        "ferryman.cli.crd",
        "ferryman.cli.observability",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


if __name__ == "__main__":
    from ferryman.cli.main import main as _main  # the registered module, where extensions append

    sys.exit(_main())
