"""`ferryman demo` (`make demo`): the main job end to end on one machine.

Exports the sample models, starts `ferryman up` on the canary spec, drives real traffic (v2 JSON, v2
binary and v1) while the controller walks the canary steps, shows the rollout live, and prints a report:
requests, p50/p95/p99 against the budget, errors, the per-version split and every analysis decision.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ferryman import processes
from ferryman.errors import FerrymanError
from ferryman.examples import INPUT_NAME, MODEL_NAME, export
from ferryman.protocol.v2 import decode_response, encode_request

console = Console()
TERMINAL = {"Promoted", "RolledBack"}


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    by_protocol: dict[str, int] = field(default_factory=dict)


class PlatformProcess:
    """A `ferryman up` subprocess with its state dir, stopped cleanly on exit."""

    def __init__(self, spec: Path, *, state_dir: Path, log_path: Path) -> None:
        self.port = processes.free_port()
        self.admin_port = processes.free_port()
        self.state_dir = state_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc = processes.start(
            [
                sys.executable,
                "-m",
                "ferryman",
                "up",
                str(spec),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--state-dir",
                str(state_dir),
            ],
            log_path=log_path,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            processes.wait_http(
                self.url + "/v2/health/ready",
                timeout=timeout,
                alive=lambda: self.proc.poll() is None,
                interval=0.2,
            )
        except processes.ServerFailed as err:
            raise FerrymanError(f"ferryman up is not ready ({err}); see {self.log_path}") from err

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        token = (self.state_dir / "token.json").read_text()
        import json

        tok = json.loads(token)["token"]
        r = httpx.request(
            method,
            f"http://127.0.0.1:{self.admin_port}{path}",
            json=body,
            timeout=10,
            headers={"authorization": f"Bearer {tok}", "x-ferryman-actor": "demo"},
        )
        doc: dict[str, Any] = r.json()
        return doc

    def stop(self) -> None:
        processes.stop(self.proc, timeout=15)


async def drive(url: str, rows: np.ndarray, load: Load, *, stop: asyncio.Event, concurrency: int = 8) -> None:
    """Closed-loop clients: a third each of v2 JSON, v2 binary and v1 requests, one row per request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                row = rows[i % len(rows)].reshape(1, -1)
                proto = ("v2", "v2-binary", "v1")[i % 3]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    if proto == "v1":
                        r = await client.post(
                            f"/v1/models/{MODEL_NAME}:predict", json={"instances": row.tolist()}
                        )
                        version = r.json().get("model_version") if r.status_code == 200 else None
                    else:
                        body, hl = encode_request(
                            {INPUT_NAME: row}, binary=proto == "v2-binary", binary_output=proto == "v2-binary"
                        )
                        headers = {"inference-header-content-length": str(hl)} if hl is not None else {}
                        r = await client.post(f"/v2/models/{MODEL_NAME}/infer", content=body, headers=headers)
                        version = None
                        if r.status_code == 200:
                            rhl = r.headers.get("inference-header-content-length")
                            version = decode_response(r.content, header_length=int(rhl) if rhl else None)[
                                "model_version"
                            ]
                except httpx.HTTPError:
                    load.errors += 1
                    continue
                load.latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or version is None:
                    load.errors += 1
                    continue
                load.by_version[version] = load.by_version.get(version, 0) + 1
                load.by_protocol[proto] = load.by_protocol.get(proto, 0) + 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))


def _live_view(status: dict[str, Any], load: Load, elapsed: float) -> Group:
    r = status["rollout"]
    weights = Table.grid(padding=(0, 2))
    for v, w in r["weights"].items():
        bar = "█" * (w // 4)
        weights.add_row(f"[bold]{v}[/]", f"{w:3d}%", f"[cyan]{bar}[/]")
    head = (
        f"phase [bold]{r['phase']}[/]  step {r['stepIndex'] + 1 if r['stepIndex'] >= 0 else '-'}  "
        f"requests {len(load.latencies)}  errors {load.errors}  t={elapsed:.0f}s"
    )
    decisions = Table("action", "weights", "reason", title="analysis decisions", expand=True)
    for h in r["history"][-8:]:
        decisions.add_row(
            h["action"], " ".join(f"{v}:{w}" for v, w in h["weights"].items()), h["reason"][:90]
        )
    return Group(
        Panel(Group(head, weights), title=f"canary rollout of {r['candidate'] or r['stable']}"), decisions
    )


def report(load: Load, status: dict[str, Any], *, budget_ms: float) -> Table:
    lat = np.array(load.latencies) * 1000 if load.latencies else np.zeros(1)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    t = Table(title="demo report (client-side, every request)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("budget", justify="right")
    t.add_row("requests", str(len(load.latencies)), "")
    t.add_row("errors", str(load.errors), "0")
    for name, value in (("p50 ms", p50), ("p95 ms", p95), ("p99 ms", p99)):
        ok = "[green]ok[/]" if value <= budget_ms else "[red]over[/]"
        t.add_row(name, f"{value:.2f}", f"{budget_ms:.0f} {ok}" if name == "p99 ms" else "")
    total = sum(load.by_version.values()) or 1
    for v, n in sorted(load.by_version.items()):
        t.add_row(f"answered by {v}", f"{n} ({100 * n / total:.1f}%)", "")
    for p, n in sorted(load.by_protocol.items()):
        t.add_row(f"protocol {p}", str(n), "")
    t.add_row("final phase", status["rollout"]["phase"], "")
    t.add_row("final weights", str(status["rollout"]["weights"]), "")
    return t


def run(directory: Path, *, timeout: float = 180.0) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    with console.status("[bold]1/4[/] training and exporting two model versions (scikit-learn -> ONNX)"):
        result = export(directory, interval_seconds=4.0, min_requests=40)
    console.print(
        f"[green]✓[/] exported v1 (acc {result.accuracy['v1']:.3f}) and v2 (acc {result.accuracy['v2']:.3f})"
        f" → {result.spec}"
    )
    state = directory / "state"
    shutil.rmtree(state, ignore_errors=True)
    platform = PlatformProcess(result.spec, state_dir=state, log_path=directory / "ferryman-up.log")
    try:
        with console.status(
            "[bold]2/4[/] starting ferryman up (gateway + both versions + rollout controller)"
        ):
            platform.wait_ready()
        console.print(f"[green]✓[/] serving on {platform.url} (admin on 127.0.0.1:{platform.admin_port})")
        rows = np.load(directory / "traffic.npy")
        load = Load()
        status = asyncio.run(_drive_rollout(platform, rows, load, timeout=timeout))
        console.print(report(load, status, budget_ms=100.0))
        decisions = Table("action", "weights", "reason", title="every analysis decision")
        for h in status["rollout"]["history"]:
            decisions.add_row(h["action"], " ".join(f"{v}:{w}" for v, w in h["weights"].items()), h["reason"])
        console.print(decisions)
        ok = status["rollout"]["phase"] in TERMINAL and load.errors == 0
        console.print("[bold green]demo complete[/]" if ok else "[bold red]demo did not finish cleanly[/]")
        return 0 if ok else 1
    finally:
        platform.stop()


async def _drive_rollout(
    platform: PlatformProcess, rows: np.ndarray, load: Load, *, timeout: float
) -> dict[str, Any]:
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive(platform.url, rows, load, stop=stop))
    t0 = time.monotonic()
    status = await asyncio.to_thread(platform.admin, "GET", "/status")
    console.print("[bold]3/4[/] live traffic while the controller analyses v2 at each canary step")
    with Live(_live_view(status, load, 0), console=console, refresh_per_second=4) as live:
        while time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.5)
            status = await asyncio.to_thread(platform.admin, "GET", "/status")
            live.update(_live_view(status, load, time.monotonic() - t0))
            if status["rollout"]["phase"] in TERMINAL:
                break
    await asyncio.sleep(1.0)  # a little traffic on the final split
    stop.set()
    await traffic
    console.print("[bold]4/4[/] report")
    return await asyncio.to_thread(platform.admin, "GET", "/status")
