"""Run the contenders one at a time under the same load generator and collect one result document.

For each contender: start it (its own process), check one answer is a well-formed v2 response, warm up,
then ``wrk -t1 -c16`` for the configured duration with one fixed 1-row v2 JSON request; contenders that
speak the binary extension are also driven with 256-row v2 binary requests. Raw ONNX Runtime is measured
in-process. A contender that is missing is "n/a"; one that fails to start or answers wrongly is "failed"
with its error. Nothing here raises for a contender's sake.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from loadtests import payloads, wrk
from loadtests.bench import machine, rawort, report
from loadtests.bench.contenders import BenchContext, Contender
from loadtests.payloads import Payload
from loadtests.servers import ServerFailed

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    duration_s: float = 20.0
    warmup_s: float = 3.0
    batch_duration_s: float = 10.0
    connections: int = 16
    threads: int = 1
    batch_rows: int = 256
    batch: bool = True
    quick: bool = False
    rounds: int = 3  # each contender is measured this many times (restarted each time); best round counts


QUICK = Settings(duration_s=5.0, warmup_s=1.0, batch_duration_s=3.0, quick=True, rounds=2)


def best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from a contender's rounds: the fastest (background load only ever slows a run down).

    A round that did not succeed makes the contender's result that failure. The 1-row and the batch
    figures are each the best of their rounds; ``rounds_rps`` keeps every round's throughput.
    """
    bad = [e for e in rounds if e["status"] != "ok"]
    if bad:
        return {**bad[0], "rounds_rps": [e["result"]["rps"] for e in rounds if e.get("result")]}
    best = max(rounds, key=lambda e: e["result"]["rps"])
    merged = {**best, "rounds_rps": [e["result"]["rps"] for e in rounds]}
    batches = [e["batch"] for e in rounds if e.get("batch")]
    if batches:
        merged["batch"] = max(batches, key=lambda b: b["rows_per_s"])
    return merged


def prepare(workdir: Path) -> BenchContext:
    """Export the sample models once into ``workdir`` (the canary parked at its first step for the run)."""
    from ferryman.examples import MODEL_NAME, export

    examples = workdir / "examples"
    spec = examples / "deployment.yaml"
    if not (
        spec.is_file()
        and (examples / "traffic.npy").is_file()
        and (examples / "models/v1/model.onnx").is_file()
    ):
        export(examples, interval_seconds=3600.0, min_requests=1_000_000)
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return BenchContext(
        workdir=workdir,
        spec=spec,
        model_path=examples / "models/v1/model.onnx",
        model_name=MODEL_NAME,
        rows=payloads.load_rows(examples),
        repo_root=REPO_ROOT,
        env={"PYTHONPATH": pythonpath},
    )


def batch_rows(rows: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(rows, (n, rows.shape[1])), dtype=np.float32)


class ContenderFailed(RuntimeError):
    pass


def check_answer(url: str, payload: Payload) -> None:
    """One request: must be 200 with a v2 response (JSON outputs, or the binary extension's header)."""
    try:
        resp = httpx.post(url + payload.path, content=payload.body, headers=payload.headers, timeout=30.0)
    except httpx.HTTPError as err:
        raise ContenderFailed(f"no answer to a v2 request: {type(err).__name__}: {err}") from err
    binary = "Inference-Header-Content-Length" in payload.headers
    ok = resp.status_code == 200 and (
        b'"outputs"' in resp.content or (binary and "inference-header-content-length" in resp.headers)
    )
    if not ok:
        raise ContenderFailed(f"bad answer to a v2 request: HTTP {resp.status_code}: {resp.text[:200]}")


class Bench:
    def __init__(self, ctx: BenchContext, settings: Settings, *, console: Console | None = None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.console = console or Console(stderr=True)
        self.single = payloads.build(ctx.rows[:1], protocol="v2", model=ctx.model_name)
        self.batch = payloads.build(
            batch_rows(ctx.rows, settings.batch_rows), protocol="v2-binary", model=ctx.model_name
        )

    def run(self, contenders: list[Contender]) -> dict[str, Any]:
        about = machine.describe()
        entries: list[dict[str, Any]] = []
        rounds: list[list[dict[str, Any]]] = [[] for _ in contenders]
        plan = [(r, i) for r in range(max(1, self.settings.rounds)) for i in range(len(contenders))]
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            overall = progress.add_task("contenders", total=len(plan))
            phase = progress.add_task("", total=1.0)
            for r, i in plan:
                c = contenders[i]
                progress.advance(overall)
                # Slow starters run once; a contender that is missing or broken is not retried.
                if r > 0 and (c.once or rounds[i][0]["status"] != "ok"):
                    continue
                progress.update(overall, description=f"[bold]{c.name}[/] (round {r + 1})")
                rounds[i].append(self.measure(c, progress, phase))
            progress.update(phase, description="done", completed=1.0)
        entries = [best_of(rs) for rs in rounds]
        about["load_average_after"] = machine.load_average()
        s = self.settings
        doc: dict[str, Any] = {
            "schema": 1,
            "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "quick": s.quick,
            "machine": about,
            "settings": {
                **asdict(s),
                "load_generator": f"wrk -t{s.threads} -c{s.connections}",
                "model": f"{self.ctx.model_name} GBT (ferryman examples, stable version v1)",
                "rows_per_request": 1,
                "protocol": "v2 JSON",
                "batch_protocol": "v2 binary",
            },
            "contenders": entries,
        }
        doc["comparisons"] = report.compute(entries)
        return doc

    def measure(self, c: Contender, progress: Progress, phase: TaskID) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": c.name,
            "label": c.label,
            "group": c.group,
            "status": "ok",
            "error": None,
            "startup_s": None,
            "result": None,
            "batch": None,
        }
        reason = c.unavailable(self.ctx)
        if reason:
            entry.update(status="n/a", error=reason)
            return entry
        try:
            if c.in_process:
                self._in_process(entry, progress, phase)
            else:
                self._over_http(c, entry, progress, phase)
        except Exception as err:  # a contender's failure is a result, not a crash
            tail = c.output()
            entry.update(
                status="failed",
                error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                if str(err)
                else type(err).__name__,
            )
            if tail:
                entry["output_tail"] = tail[-3000:]
            self.console.print(f"[red]{c.name} failed:[/] {entry['error']}")
        finally:
            progress.update(phase, description=f"{c.name}: stopping")
            try:
                c.stop()
            except Exception as err:  # pragma: no cover - best effort
                self.console.print(f"[yellow]{c.name}: stop failed: {err}[/]")
        return entry

    def _in_process(self, entry: dict[str, Any], progress: Progress, phase: TaskID) -> None:
        s = self.settings
        progress.update(phase, description="raw-ort: 1 row per call", completed=0, total=None)
        entry["result"] = rawort.measure(str(self.ctx.model_path), self.ctx.rows[:1], duration_s=s.duration_s)
        if s.batch:
            progress.update(phase, description=f"raw-ort: {s.batch_rows} rows per call")
            entry["batch"] = rawort.measure(
                str(self.ctx.model_path),
                batch_rows(self.ctx.rows, s.batch_rows),
                duration_s=s.batch_duration_s,
            )

    def _over_http(self, c: Contender, entry: dict[str, Any], progress: Progress, phase: TaskID) -> None:
        s = self.settings
        progress.update(
            phase,
            description=f"{c.name}: starting (up to {c.startup_timeout:.0f} s)",
            completed=0,
            total=None,
        )
        for attempt in range(1, c.start_attempts + 1):
            try:
                c.start(self.ctx)
                break
            except ServerFailed as err:
                if attempt == c.start_attempts:
                    raise
                self.console.print(
                    f"[yellow]{c.name} did not start ({str(err).splitlines()[0][:120]}); trying again[/]"
                )
                c.stop()
        entry["startup_s"] = round(c.startup_seconds, 2)
        check_answer(c.url, self.single)
        if s.warmup_s > 0:
            self._wrk(c, self.single, s.warmup_s, progress, phase, "warm-up")
        result = self._wrk(c, self.single, s.duration_s, progress, phase, "1 row, v2 JSON")
        entry["result"] = result.as_dict()
        if result.requests == 0:
            raise ContenderFailed("no request completed")
        if c.batch and s.batch:
            check_answer(c.url, self.batch)
            self._wrk(
                c, self.batch, min(1.0, s.warmup_s) if s.warmup_s > 0 else 0, progress, phase, "warm-up"
            )
            b = self._wrk(
                c, self.batch, s.batch_duration_s, progress, phase, f"{s.batch_rows} rows, v2 binary"
            )
            entry["batch"] = {
                **b.as_dict(),
                "rows_per_request": s.batch_rows,
                "rows_per_s": b.rps * s.batch_rows,
            }

    def _wrk(
        self, c: Contender, payload: Payload, seconds: float, progress: Progress, phase: TaskID, what: str
    ) -> wrk.WrkResult:
        if seconds <= 0:
            return wrk.WrkResult(self.settings.connections, 0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 0)
        progress.update(phase, description=f"{c.name}: {what}", completed=0, total=seconds)

        def tick(elapsed: float) -> None:
            progress.update(phase, completed=min(elapsed, seconds))

        return wrk.run(
            c.url,
            payload,
            duration_s=seconds,
            connections=self.settings.connections,
            threads=self.settings.threads,
            tick=tick,
        )
