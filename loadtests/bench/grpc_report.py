"""The gRPC section's ratios and targets (pure), and its Markdown and rich table.

The section lives in ``docs/benchmarks.md`` between its own two markers, so the main benchmark, the
compute-bound one and this one each rewrite only their part of the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

START = "<!-- grpc:start -->"
END = "<!-- grpc:end -->"


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    numerator: tuple[str, str]  # (contender, transport)
    denominator: tuple[str, str] | None = None  # None: the numerator's p99 in ms
    target: float | None = None  # None: informational
    at_most: bool = False  # the target is an upper bound (p99)
    cpu: bool = False  # rows per server CPU second instead of rows per second


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "ferryman gRPC vs stock KServe gRPC (rows/s)", ("ferryman", "grpc"), ("kserve-stock", "grpc"), 3.0
    ),
    Comparison("ferryman gRPC vs ferryman REST (rows/s)", ("ferryman", "grpc"), ("ferryman", "rest"), 0.8),
    Comparison(
        "ferryman gRPC vs stock KServe gRPC (rows per server CPU second)",
        ("ferryman", "grpc"),
        ("kserve-stock", "grpc"),
        cpu=True,
    ),
    Comparison(
        "ferryman gRPC vs ferryman REST (rows per server CPU second)",
        ("ferryman", "grpc"),
        ("ferryman", "rest"),
        cpu=True,
    ),
    Comparison(
        "ferryman gRPC vs the grpcio ceiling (rows/s)", ("ferryman", "grpc"), ("grpcio-ceiling", "grpc")
    ),
    Comparison(
        "stock KServe gRPC vs the grpcio ceiling (rows/s)",
        ("kserve-stock", "grpc"),
        ("grpcio-ceiling", "grpc"),
    ),
    Comparison(
        "ferryman gRPC: native vs grpcio transport (rows/s)",
        ("ferryman", "grpc"),
        ("ferryman-grpcio", "grpc"),
    ),
    Comparison(
        "ferryman gRPC: native vs grpcio transport (rows per server CPU second)",
        ("ferryman", "grpc"),
        ("ferryman-grpcio", "grpc"),
        cpu=True,
    ),
    Comparison("ferryman gRPC p99 (ms)", ("ferryman", "grpc")),
    Comparison("stock KServe gRPC p99 (ms)", ("kserve-stock", "grpc")),
)


def _load(
    by_name: dict[str, dict[str, Any]], key: tuple[str, str]
) -> tuple[dict[str, Any] | None, str | None]:
    name, transport = key
    entry = by_name.get(name)
    if entry is None:
        return None, f"{name}: not run"
    if entry.get("status") != "ok":
        return None, f"{name}: {entry.get('status')} ({entry.get('error') or ''})".replace(" ()", "")
    load = entry.get("loads", {}).get(transport)
    if load is None:
        return None, f"{name}: no {transport} run"
    if load.get("errors"):
        return None, f"{name} {transport}: {load['errors']} errors"
    return load, None


def compute(
    entries: list[dict[str, Any]], comparisons: tuple[Comparison, ...] = COMPARISONS
) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in entries}
    out = []
    for c in comparisons:
        num, why = _load(by_name, c.numerator)
        den, why_den = _load(by_name, c.denominator) if c.denominator else (None, None)
        value = None
        note = why or why_den
        if note is None and num is not None:
            if c.denominator is None:
                value = float(num["p99_ms"])
            elif den and c.cpu and num.get("server_cpu_us_per_row"):
                value = float(den["server_cpu_us_per_row"]) / float(num["server_cpu_us_per_row"])
            elif den and not c.cpu and den["rows_per_s"]:
                value = float(num["rows_per_s"]) / float(den["rows_per_s"])
        met = None
        if value is not None and c.target is not None:
            met = value <= c.target if c.at_most else value >= c.target
        out.append(
            {
                **asdict(c),
                "kind": "p99" if c.denominator is None else "rows",
                "value": value,
                "met": met,
                "note": note,
            }
        )
    return out


# -- rendering --------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _value(c: dict[str, Any]) -> str:
    v = c["value"]
    if v is None:
        return "n/a"
    return f"{v:.1f} ms" if c["kind"] == "p99" else f"{v:.2f}x"


def _target(c: dict[str, Any]) -> str:
    t = c["target"]
    if t is None:
        return "(context)"
    return f"<= {t:g} ms" if c["at_most"] else f">= {t:g}x"


def _met(c: dict[str, Any]) -> str:
    return {True: "met", False: "**missed**", None: ""}[c["met"]]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        START,
        "## gRPC (Open Inference Protocol v2, `inference.GRPCInferenceService`)",
        "",
        f"Run: {doc['generated_at']} ({'quick' if doc['quick'] else 'full'} mode, "
        "`python -m loadtests.bench.grpc"
        f"{' --quick' if doc['quick'] else ''}`, part of `make "
        f"bench`). Raw figures: `{doc.get('json_name')}`. "
        f"Load average (1, 5, 15 min) before / after: {doc['machine'].get('load_average_before')} / "
        f"{doc['machine'].get('load_average_after')} (the machine is shared: rows/s move with it, CPU per "
        "row hardly).",
        "",
        f"- model: {s['model']} (the HTTP-bound section's: ~10 us of compute, the transport is the cost); "
        f"{s['rows_per_request']} row per request, so rows/s = requests/s",
        f"- gRPC: {s['grpc_request']}, driven by ghz {s['ghz']} (built from its Go module) with "
        f"{s['streams']} "
        "concurrent streams on one HTTP/2 connection, closed loop",
        f"- REST: {s['rest_request']}, driven by `wrk -t1 -c{s['streams']}` (16 keep-alive connections), "
        "closed loop",
        f"- {s['duration_s']:g} s per load after {s['warmup_s']:g} s of warm-up, one contender at a time; "
        f"{s['rounds']} round(s), per load the best round counts",
        "",
        _row(
            [
                "contender",
                "what",
                "transport",
                "rows/s",
                "p50 ms",
                "p99 ms",
                "server CPU us/row",
                "load generator CPU us/row",
                "errors",
                "rounds (rows/s)",
            ]
        ),
        _row(["---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
    ]
    for e in doc["contenders"]:
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
                        "",
                        f"{e['status']}: {e.get('error') or ''}",
                        "",
                    ]
                )
            )
            continue
        for transport, load in e["loads"].items():
            rounds = ", ".join(_num(x) for x in load.get("rounds_rows_per_s", []))
            lines.append(
                _row(
                    [
                        f"`{e['name']}`",
                        e["label"],
                        transport,
                        _num(load["rows_per_s"]),
                        _num(load["p50_ms"], 2),
                        _num(load["p99_ms"], 2),
                        _num(load.get("server_cpu_us_per_row")),
                        _num(load.get("client_cpu_us_per_row")),
                        str(load["errors"]),
                        rounds,
                    ]
                )
            )
    lines += [
        "",
        "### Ratios against the targets (issue 21)",
        "",
        _row(["comparison", "value", "target", "result", "note"]),
        _row(["---", "---:", "---", "---", "---"]),
    ]
    for c in doc["comparisons"]:
        lines.append(_row([c["name"], _value(c), _target(c), _met(c), c["note"] or ""]))
    lines += [
        "",
        "### Reading the figures",
        "",
        *_cost_note(doc["contenders"]),
        "- Each server runs one process with the model's session on its event loop; the load generator "
        "shares "
        "the machine's cores with it, and ghz spends several times more CPU per call than wrk (the load "
        "generator column), which the gRPC rows' rows/s pay for on a small machine. The CPU columns are "
        "the fairer comparison.",
        "- ferryman's gRPC service calls the REST path's prediction path directly: the same admission, "
        "validation, routing, metrics and drift sampling run per call, with protobuf in place of JSON. The "
        "`ferryman` row is the native transport (the default: ferryman's own asyncio HTTP/2 server for unary "
        "gRPC, which answers a call from the read that brought it); `ferryman-grpcio` is the same service on "
        "`grpc.aio` (`--grpc-transport grpcio`). KServe's gRPC server converts each message into its own "
        "request object, runs the model's `predict` through its data plane and converts the answer back.",
        "",
        END,
        "",
    ]
    return "\n".join(lines)


def _cpu(entries: list[dict[str, Any]], name: str, transport: str) -> float | None:
    for e in entries:
        if e["name"] == name and e.get("status") == "ok" and transport in e.get("loads", {}):
            value = e["loads"][transport].get("server_cpu_us_per_row")
            return float(value) if value else None
    return None


def _cost_note(entries: list[dict[str, Any]]) -> list[str]:
    """What the server CPU per row says (it does not depend on what else runs on the machine)."""
    ceiling, grpc, grpcio, rest = (
        _cpu(entries, "grpcio-ceiling", "grpc"),
        _cpu(entries, "ferryman", "grpc"),
        _cpu(entries, "ferryman-grpcio", "grpc"),
        _cpu(entries, "ferryman", "rest"),
    )
    if grpc is None or rest is None:
        return []
    lines = [
        f"- Server CPU per row: ferryman's whole REST path (HTTP parsing, JSON, validation, routing, ONNX "
        f"Runtime, metrics, drift sampling) costs {rest:,.0f} us per row, its gRPC path on the native "
        f"transport {grpc:,.0f} us ({rest / grpc:.2f}x REST's rows per CPU second)."
    ]
    if ceiling is not None:
        lines.append(
            f"- The gRPC library alone (`grpcio-ceiling`: grpc.aio answering a fixed message, no parsing, no "
            f"model) costs {ceiling:,.0f} us per call"
            + (f", and the same service on grpc.aio {grpcio:,.0f} us" if grpcio is not None else "")
            + ": no grpcio server could come within 0.8x of REST here, which is why the native transport "
            "(no C-core, no thread hop; HPACK, framing and flow control in Python on the REST loop) is the "
            "default."
        )
    return lines


def replace_section(document: str, section: str) -> str:
    """``document`` with its gRPC section replaced by ``section`` (appended when it has none)."""
    start, end = document.find(START), document.find(END)
    if start != -1 and end != -1 and end > start:
        return document[:start] + section.rstrip("\n") + document[end + len(END) :]
    return document.rstrip("\n") + "\n\n" + section


def section_of(document: str) -> str | None:
    """The gRPC section of ``document`` (markers included), or None."""
    start, end = document.find(START), document.find(END)
    if start == -1 or end == -1 or end < start:
        return None
    return document[start : end + len(END)] + "\n"


def summary_table(doc: dict[str, Any]) -> Table:
    t = Table(title="gRPC: ratios")
    for col in ("comparison", "value", "target", "result", "note"):
        t.add_column(col)
    for c in doc["comparisons"]:
        t.add_row(c["name"], _value(c), _target(c), _met(c).strip("*"), c["note"] or "")
    return t
