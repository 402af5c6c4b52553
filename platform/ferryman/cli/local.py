"""Local mode: `ferryman up` and the rollout controls (status, promote, rollback, pause, resume, feedback)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ferryman.cli import main as cli
from ferryman.errors import FerrymanError
from ferryman.statefile import read_json


def _up(args: argparse.Namespace) -> int:
    from ferryman.cli.runtimes import launcher

    if args.grpc_port is not None and args.runtime != "gateway":
        raise FerrymanError(
            f"--grpc-port: --runtime {args.runtime} serves REST only (gRPC: --runtime gateway)"
        )
    launcher(args.runtime)(
        str(args.spec),
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        state_dir=str(args.state_dir),
        telemetry=not args.no_metrics,
        **cli.security_options(args),
        **cli.grpc_options(args),
    )
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from ferryman.cli.runtimes import launcher

    launcher("gateway-proxy")(
        str(args.routes),
        host=args.host,
        port=args.port,
        telemetry=not args.no_metrics,
        **cli.grpc_options(args),
    )
    return 0


def admin_endpoint(state_dir: Path) -> tuple[str, str]:
    info = read_json(state_dir / "admin.json")
    if not info:
        raise FerrymanError(f"no running `ferryman up` found in {state_dir} (start one, or pass --state-dir)")
    token = os.environ.get("FERRYMAN_ADMIN_TOKEN") or (read_json(state_dir / "token.json") or {}).get("token")
    if not token:
        raise FerrymanError(f"no admin token: set FERRYMAN_ADMIN_TOKEN or keep {state_dir}/token.json")
    return str(info["url"]), str(token)


def admin_call(state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    url, token = admin_endpoint(state_dir)
    try:
        resp = httpx.request(
            method,
            url + path,
            json=body,
            timeout=10,
            headers={"authorization": f"Bearer {token}", "x-ferryman-actor": os.environ.get("USER", "cli")},
        )
    except httpx.HTTPError as err:
        raise FerrymanError(f"cannot reach the admin API at {url}: {type(err).__name__}") from err
    try:
        doc: dict[str, Any] = resp.json()
    except ValueError:  # not JSON (a proxy, or a crash page): report the status and the start of the body
        doc = {"error": resp.text[:200]}
    if resp.status_code >= 400:
        raise FerrymanError(f"{path.lstrip('/')} refused ({resp.status_code}): {doc.get('error')}")
    return doc


def _status(args: argparse.Namespace) -> int:
    doc = admin_call(args.state_dir, "GET", "/status")
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    print_status(doc)
    return 0


def print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    r = doc["rollout"]
    weights = "  ".join(f"{v} {w}%" for v, w in r["weights"].items())
    head = Table(title=f"{doc['model']} rollout", show_header=False)
    head.add_row("strategy", r["strategy"])
    head.add_row("phase", f"[bold]{r['phase']}[/]")
    head.add_row("stable", str(r["stable"]))
    head.add_row("candidate", str(r["candidate"] or "-"))
    head.add_row("step", str(r["stepIndex"] + 1 if r["stepIndex"] >= 0 else "-"))
    head.add_row("weights", weights)
    last = r.get("lastAnalysis")
    if last:
        head.add_row("last analysis", f"{last['outcome']}: {last['reason']}")
    console.print(head)
    reload_line = spec_reload_line(doc.get("specReload"))
    if reload_line:
        console.print(reload_line, highlight=False)
    t = Table(title="traffic (exact, since start)")
    for col in ("version", "route", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "accuracy (95% CI)"):
        t.add_column(col, justify="right" if col not in ("version", "route") else "left")
    for a in doc["traffic"]:
        acc = a.get("accuracy")
        acc_s = (
            f"{acc['value']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] n={acc['total']}"
            if acc
            else "-"
        )
        t.add_row(
            a["version"],
            a["route"],
            str(a["requests"]),
            str(a["errors"]),
            _f(a["p50Ms"]),
            _f(a["p95Ms"]),
            _f(a["p99Ms"]),
            acc_s,
        )
    console.print(t)
    hist = Table(title="decisions")
    for col in ("action", "weights", "actor", "reason"):
        hist.add_column(col)
    for h in r["history"][-12:]:
        hist.add_row(
            h["action"], " ".join(f"{v}:{w}" for v, w in h["weights"].items()), h["actor"], h["reason"]
        )
    console.print(hist)


def spec_reload_line(reload: dict[str, Any] | None) -> str | None:
    """One line on the last attempt to adopt an edited spec (None when the spec file was never edited)."""
    if not reload:
        return None
    import datetime as dt

    at = dt.datetime.fromtimestamp(reload["at"], tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if reload["result"] == "accepted":
        return f"spec reload: accepted at {at}"
    return (
        f"[bold red]spec reload: REJECTED at {at}[/]: {reload['error']}\n"
        f"[red]{reload.get('specFile') or 'the spec file'} on disk is NOT what runs: the previous spec keeps "
        f"serving until a valid edit is saved[/]"
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _action(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        body: dict[str, Any] = {"reason": args.reason} if args.reason else {}
        if getattr(args, "version", None):
            body["version"] = args.version
        doc = admin_call(args.state_dir, "POST", f"/{name}", body)
        d = doc["decision"]
        cli.console.print(f"[green]{d['action']}[/]: weights {d['weights']} ({d['reason']})")
        return 0

    return run


def _feedback(args: argparse.Namespace) -> int:
    doc = admin_call(args.state_dir, "POST", "/feedback", {"id": args.request_id, "label": args.label})
    cli.console.print(doc)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    def state(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            type=Path,
            default=Path(os.environ.get("FERRYMAN_STATE_DIR", ".ferryman")),
            help="where `ferryman up` keeps rollout state and its admin address (default .ferryman)",
        )

    p = sub.add_parser("up", help="run a whole ModelDeployment on this machine: gateway, versions, rollouts")
    p.add_argument("spec", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-host", default="127.0.0.1", help="admin API address (loopback unless you say so)")
    p.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="default: --port + 1 (--runtime ray: the first port after the ingress replicas' ports)",
    )
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="no Prometheus metrics and no drift monitoring (the analysis then uses latency and errors only)",
    )
    p.add_argument(
        "--runtime",
        choices=["gateway", "ray"],
        default="gateway",
        help="gateway: every version in-process; ray: a local Ray instance running the same Ray Serve "
        "app KubeRay runs",
    )
    cli.add_security_flags(p)
    cli.add_grpc_flag(p)
    state(p)
    p.set_defaults(func=_up)

    p = sub.add_parser(
        "gateway",
        help="the cluster gateway: route by a routes.json (written by the operator) to per-version servers",
    )
    p.add_argument("--routes", type=Path, required=True, help="routes.json (ferryman.routes format)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--no-metrics", action="store_true")
    cli.add_grpc_flag(p)
    p.set_defaults(func=_gateway)

    p = sub.add_parser("status", help="rollout phase, step, weights, last analysis and per-version traffic")
    p.add_argument("--json", action="store_true")
    state(p)
    p.set_defaults(func=_status)

    for name, text in (
        ("promote", "give the candidate (or --version) all traffic now"),
        ("rollback", "return all traffic to stable (after a promotion: to the previous stable)"),
        ("pause", "stop the rollout where it is"),
        ("resume", "continue a paused rollout"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--reason", default=None)
        if name == "promote":
            p.add_argument("--version", default=None, help="A/B: the winning arm")
        state(p)
        p.set_defaults(func=_action(name))

    p = sub.add_parser("feedback", help="report the true label of an answered request (A/B accuracy)")
    p.add_argument("request_id")
    p.add_argument("label", type=int)
    state(p)
    p.set_defaults(func=_feedback)


cli.EXTENSIONS.append(register)
