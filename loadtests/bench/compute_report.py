"""The compute-bound section's ratios and targets (pure), and its Markdown and rich table.

The section lives in ``docs/benchmarks.md`` between two markers, so the main benchmark and this one can
each rewrite their own part of the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

START = "<!-- compute-bound:start -->"
END = "<!-- compute-bound:end -->"
RAW = "raw-ort"
PAIRED = "one-connection-interleaved"  # the plain and batched servers, alternated at 1 connection


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    kind: str  # "rows" (rows/s ratio), "p99" (ms), "latency-cost" (p50 ratio - 1), "paired-cost" (the same,
    # as the median of interleaved pairs)
    numerator: str
    at: int  # connections
    denominator: str | None = None  # a contender, or "raw-ort" (its best batch size)
    denominator_at: int | None = None
    target: float | None = None  # None: informational
    source: str = "issue"  # where the target comes from


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("batching vs raw-ORT limit, 64 connections", "rows", "ferryman-batched", 64, RAW, target=0.8),
    Comparison("batching p99 at 64 connections (ms)", "p99", "ferryman-batched", 64, target=100.0),
    Comparison(
        "batching vs stock KServe, 64 connections", "rows", "ferryman-batched", 64, "kserve-stock", 64, 3.0
    ),
    Comparison(
        "batching vs Ray Serve @serve.batch, 64 connections",
        "rows",
        "ferryman-batched",
        64,
        "ray-serve-batch",
        64,
        1.5,
    ),
    Comparison(
        "latency cost of batching at 1 connection (p50, interleaved pairs)",
        "paired-cost",
        PAIRED,
        1,
        target=0.10,
    ),
    Comparison(
        "latency cost of batching at 1 connection (p50, separate runs)",
        "latency-cost",
        "ferryman-batched",
        1,
        "ferryman-plain",
        1,
    ),
    Comparison(
        "batching vs no batching, 32 connections",
        "rows",
        "ferryman-batched",
        32,
        "ferryman-plain",
        32,
        2.0,
        "must show",
    ),
    Comparison(
        "batching vs raw-ORT best single-thread batch, 32 connections",
        "rows",
        "ferryman-batched",
        32,
        RAW,
        target=0.6,
        source="must show",
    ),
    Comparison(
        "gateway with batching vs raw-ORT limit, 64 connections",
        "rows",
        "ferryman-gateway-batched",
        64,
        RAW,
        target=0.8,
    ),
    Comparison(
        "gateway with batching p99 at 64 connections (ms)",
        "p99",
        "ferryman-gateway-batched",
        64,
        target=100.0,
    ),
    Comparison(
        "gateway with batching vs stock KServe, 64 connections",
        "rows",
        "ferryman-gateway-batched",
        64,
        "kserve-stock",
        64,
    ),
    Comparison("batching vs FastAPI + ORT, 64 connections", "rows", "ferryman-batched", 64, "fastapi", 64),
    Comparison(
        "2 intra-op threads vs 1 (batching.threads), 64 connections",
        "rows",
        "ferryman-batched-t2",
        64,
        "ferryman-batched",
        64,
    ),
)


def level(entry: dict[str, Any] | None, connections: int) -> dict[str, Any] | None:
    if entry is None or entry.get("status") != "ok":
        return None
    for lv in entry.get("levels", []):
        if lv["connections"] == connections:
            return lv  # type: ignore[no-any-return]
    return None


def _figure(
    by_name: dict[str, dict[str, Any]], name: str | None, at: int | None, kind: str
) -> tuple[float | None, str | None]:
    if name is None:
        return None, None
    entry = by_name.get(name)
    if entry is None:
        return None, f"{name}: not run"
    if entry.get("status") != "ok":
        return None, f"{name}: {entry.get('status')} ({entry.get('error') or ''})".replace(" ()", "")
    if name == RAW:
        return float(entry["best"]["rows_per_s"]), None
    if name == PAIRED:
        return float(entry["cost"]), None
    lv = level(entry, at or 0)
    if lv is None:
        return None, f"{name}: no run at {at} connections"
    if lv.get("non_2xx") or lv.get("socket_errors"):
        return None, f"{name}: errors at {at} connections"
    key = {"rows": "rows_per_s", "p99": "p99_ms", "latency-cost": "p50_ms"}[kind]
    return float(lv[key]), None


def compute(
    entries: list[dict[str, Any]], comparisons: tuple[Comparison, ...] = COMPARISONS
) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in entries}
    out = []
    for c in comparisons:
        num, why = _figure(by_name, c.numerator, c.at, c.kind)
        den, why_den = _figure(by_name, c.denominator, c.denominator_at or c.at, c.kind)
        value = None
        note = why or why_den
        if note is None and num is not None:
            if c.kind in ("p99", "paired-cost"):
                value = num
            elif den:
                value = num / den - 1.0 if c.kind == "latency-cost" else num / den
        met = None
        if value is not None and c.target is not None:
            met = value <= c.target if c.kind in ("p99", "latency-cost", "paired-cost") else value >= c.target
        out.append({**asdict(c), "value": value, "met": met, "note": note})
    return out


# -- rendering --------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _value(c: dict[str, Any]) -> str:
    v = c["value"]
    if v is None:
        return "n/a"
    if c["kind"] == "p99":
        return f"{v:.1f} ms"
    if c["kind"] in ("latency-cost", "paired-cost"):
        return f"{v:+.1%}"
    return f"{v:.2f}x"


def _target(c: dict[str, Any]) -> str:
    t = c["target"]
    if t is None:
        return "(context)"
    if c["kind"] == "p99":
        return f"<= {t:g} ms"
    if c["kind"] in ("latency-cost", "paired-cost"):
        return f"<= {t:+.0%}"
    return f">= {t:g}x"


def _met(c: dict[str, Any]) -> str:
    return {True: "met", False: "**missed**", None: ""}[c["met"]]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    entries = doc["contenders"]
    raw = next(e for e in entries if e["name"] == RAW)
    lines = [
        START,
        "## Compute-bound model (adaptive batching)",
        "",
        f"Run: {doc['generated_at']} ({'quick' if doc['quick'] else 'full'} mode, "
        "`python -m loadtests.bench.compute"
        f"{' --quick' if doc['quick'] else ''}`, part of `make "
        f"bench`). Raw figures: `{doc.get('json_name')}`. "
        f"Load average before / after: {doc['machine'].get('load_average_before')} / "
        f"{doc['machine'].get('load_average_after')}.",
        "",
        f"- model: {s['model']}: a wide MLP (3 x 2048), milliseconds for one row alone; 1 row per request, "
        "v2 JSON",
        f"- load: `wrk -t1 -cN` closed loop at {', '.join(str(c) for c in s['connections'])} connections, "
        f"{s['duration_s']:g} s each after {s['warmup_s']:g} s of warm-up, one contender at a time, "
        f"{s.get('rounds', 1)} round(s): per level the best round counts (Ray, slow to start: one)",
        f"- ONNX Runtime: {s['ort_threads']} intra-op thread(s) per session (ferryman's default with "
        "batching on this machine: one per core but one; `ferryman-batched-t2`: 2), sequential, no spinning",
        "- mean batch: requests per model run while measuring (ferryman: `ferryman_batch_size`; Ray: its own "
        "count)",
        "",
        "### The limit: raw ONNX Runtime in-process",
        "",
        _row(["batch size", "rows/s", "p50 ms per run", "p99 ms per run"]),
        _row(["---:", "---:", "---:", "---:"]),
    ]
    for e in raw["sweep"]:
        lines.append(
            _row([str(e["batch_size"]), _num(e["rows_per_s"]), _num(e["p50_ms"], 2), _num(e["p99_ms"], 2)])
        )
    lines += [
        "",
        f"Best: **{_num(raw['best']['rows_per_s'])} rows/s** at batch size {raw['best']['batch_size']}.",
        "",
        "### Servers, 1-row requests",
        "",
        _row(["contender", "what", "connections", "rows/s", "p50 ms", "p99 ms", "mean batch", "errors"]),
        _row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for e in entries:
        if e["name"] in (RAW, PAIRED):
            continue
        if e["status"] != "ok":
            lines.append(
                _row(
                    [
                        f"`{e['name']}`",
                        e["label"],
                        "",
                        "",
                        "",
                        "",
                        "",
                        f"{e['status']}: {e.get('error') or ''}",
                    ]
                )
            )
            continue
        for lv in e["levels"]:
            errors = lv["non_2xx"] + lv["socket_errors"]
            lines.append(
                _row(
                    [
                        f"`{e['name']}`",
                        e["label"],
                        str(lv["connections"]),
                        _num(lv["rows_per_s"]),
                        _num(lv["p50_ms"], 2),
                        _num(lv["p99_ms"], 2),
                        _num(lv.get("mean_batch"), 1),
                        str(errors),
                    ]
                )
            )
    lines += _paired_lines(next((e for e in entries if e["name"] == PAIRED), None))
    lines += [
        "",
        "### Ratios against the targets",
        "",
        _row(["comparison", "value", "target", "from", "result", "note"]),
        _row(["---", "---:", "---", "---", "---", "---"]),
    ]
    for c in doc["comparisons"]:
        lines.append(
            _row(
                [
                    c["name"],
                    _value(c),
                    _target(c),
                    c["source"] if c["target"] is not None else "",
                    _met(c),
                    c["note"] or "",
                ]
            )
        )
    lines += [
        "",
        "### Reading the figures",
        "",
        "- With 1-row requests and one connection there is nothing to merge: batching can only cost (a "
        "hand-off "
        "to the version's worker thread and back). From 8 connections on, requests that arrive while a run "
        "is "
        "going queue and share the next run; the mean batch follows the load up to `maxBatchSize`.",
        "- The runs are pipelined: when a run ends, the version's worker thread takes the next batch itself "
        "while the event loop answers the last one, so with N closed-loop connections two batches of about "
        "N/2 alternate (one runs while the other's clients are answered and send again). At 32 connections "
        "the "
        "batches are ~16 rows, so the server's ceiling there is raw ORT at batch 16, not at its best size; "
        "at 64 connections it is raw ORT at `maxBatchSize` (32).",
        "- Everything shares the machine's cores: the load generator (`wrk`), the server's event loop (HTTP, "
        "JSON, routing, metrics, drift sampling: a fixed cost per request) and ONNX Runtime. The raw-ORT "
        "limit "
        "has them all to itself and no per-request work at all, so on a 2-core machine a server cannot reach "
        "it: the loop's per-request cost and wrk take the second core's time.",
        "- Servers without batching run one row per model call whatever the load, so their rows/s stays near "
        "the single-row limit (or below it, when ORT runs on the event loop and requests wait behind it).",
        "",
        END,
        "",
    ]
    return "\n".join(lines)


def paired_cost(pairs: list[dict[str, Any]]) -> float:
    """Batching's latency cost at 1 connection from interleaved pairs: the median over pairs of the batched
    server's p50 over the plain server's, minus 1. Each pair ran back to back on the same machine, so the
    host's drift (other tenants, CPU frequency) cancels out within a pair; the median drops a pair that a
    burst hit in one half."""
    ratios = sorted(p["batched_p50_ms"] / p["plain_p50_ms"] for p in pairs)
    if not ratios:
        raise ValueError("no pairs")
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return median - 1.0


def _paired_lines(entry: dict[str, Any] | None) -> list[str]:
    if entry is None:
        return []
    head = [
        "",
        "### The cost at 1 connection, interleaved",
        "",
        "Both servers up at once (`ferryman-plain` and `ferryman-batched`, the same spec with and without "
        f"`batching`), {entry.get('pair_seconds', 0):g} s of `wrk -t1 -c1` on one then the other, the order "
        "alternating, after a warm-up of each: the machine's drift between separate runs (this host is "
        "shared) cancels out within a pair.",
        "",
    ]
    if entry["status"] != "ok":
        return [*head, f"{entry['status']}: {entry.get('error') or ''}"]
    lines = [
        *head,
        _row(["pair", "first", "plain p50 ms", "batched p50 ms", "batched / plain"]),
        _row(["---:", "---", "---:", "---:", "---:"]),
    ]
    for i, p in enumerate(entry["pairs"], 1):
        ratio = p["batched_p50_ms"] / p["plain_p50_ms"]
        lines.append(
            _row(
                [str(i), p["first"], _num(p["plain_p50_ms"], 3), _num(p["batched_p50_ms"], 3), f"{ratio:.3f}"]
            )
        )
    lines += ["", f"Median of the pairs: **{entry['cost']:+.1%}**."]
    return lines


def replace_section(document: str, section: str) -> str:
    """``document`` with its compute-bound section replaced by ``section`` (appended when it has none)."""
    start, end = document.find(START), document.find(END)
    if start != -1 and end != -1 and end > start:
        return document[:start] + section.rstrip("\n") + document[end + len(END) :]
    return document.rstrip("\n") + "\n\n" + section


def section_of(document: str) -> str | None:
    """The compute-bound section of ``document`` (markers included), or None."""
    start, end = document.find(START), document.find(END)
    if start == -1 or end == -1 or end < start:
        return None
    return document[start : end + len(END)] + "\n"


def summary_table(doc: dict[str, Any]) -> Table:
    t = Table(title="compute-bound model: ratios")
    for col in ("comparison", "value", "target", "result", "note"):
        t.add_column(col)
    for c in doc["comparisons"]:
        t.add_row(c["name"], _value(c), _target(c), _met(c).strip("*"), c["note"] or "")
    return t
