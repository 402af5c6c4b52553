"""Drive ``ghz`` (a Go gRPC load generator, closed loop) with one serialized request, read its JSON report.

ghz is built from its Go module through the Go module proxy (``go install github.com/bojand/ghz/cmd/ghz@
VERSION``) into ``~/.cache/ferryman/bin`` the first time it is needed, with its own module cache under
``~/.cache/ferryman/go`` (about a minute and a few hundred MB of modules, once per machine). It needs only
the ``.proto`` file and the message as bytes (``--binary-file``): no reflection on the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = "v0.120.0"
MODULE = "github.com/bojand/ghz/cmd/ghz"
CACHE = Path(os.environ.get("FERRYMAN_CACHE_DIR") or Path.home() / ".cache" / "ferryman")


class GhzError(RuntimeError):
    """ghz is missing and cannot be built, failed, or printed no report."""


@dataclass(frozen=True, slots=True)
class GhzResult:
    concurrency: int
    connections: int
    requests: int  # calls answered OK
    errors: int  # calls answered with any other status (or not at all)
    duration_s: float
    rps: float  # OK calls per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def binary(*, build: bool = True) -> Path:
    """The ghz executable: ``$FERRYMAN_GHZ``, one on PATH, the cached build, or a new build (``build``)."""
    explicit = os.environ.get("FERRYMAN_GHZ")
    if explicit:
        return Path(explicit)
    cached = CACHE / "bin" / "ghz"
    if cached.is_file():
        return cached
    found = shutil.which("ghz")
    if found:
        return Path(found)
    if not build:
        raise GhzError(f"ghz is not built yet ({cached})")
    go = shutil.which("go")
    if go is None:
        raise GhzError("ghz is missing and Go is not installed to build it (scripts/system-deps.sh)")
    env = {
        **os.environ,
        "GOBIN": str(cached.parent),
        "GOPATH": str(CACHE / "go"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not cached.is_file():
        raise GhzError(f"building ghz {VERSION} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return cached


def parse_report(text: str, *, concurrency: int, connections: int) -> GhzResult:
    """ghz's ``--format json`` report (times in nanoseconds) as a result."""
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise GhzError(f"ghz printed no JSON report:\n{text[-2000:]}") from err
    statuses = {str(k): int(v) for k, v in (doc.get("statusCodeDistribution") or {}).items()}
    ok = statuses.get("OK", 0)
    total_s = float(doc.get("total", 0)) / 1e9
    percentiles = {
        int(p["percentage"]): float(p["latency"]) / 1e6 for p in doc.get("latencyDistribution") or []
    }
    return GhzResult(
        concurrency=concurrency,
        connections=connections,
        requests=ok,
        errors=sum(statuses.values()) - ok,
        duration_s=total_s,
        rps=ok / total_s if total_s > 0 else 0.0,
        p50_ms=percentiles.get(50, 0.0),
        p90_ms=percentiles.get(90, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        max_ms=float(doc.get("slowest", 0)) / 1e6,
        mean_ms=float(doc.get("average", 0)) / 1e6,
        statuses=statuses,
    )


def run(
    target: str,
    message: bytes,
    *,
    proto: Path,
    call: str,
    duration_s: float,
    concurrency: int = 16,
    connections: int = 1,
    timeout_s: float = 10.0,
) -> GhzResult:
    """``concurrency`` closed-loop callers over ``connections`` HTTP/2 connections for ``duration_s``."""
    exe = binary()
    with tempfile.TemporaryDirectory(prefix="ferryman-ghz-") as tmp:
        body = Path(tmp) / "request.bin"
        body.write_bytes(message)
        argv = [
            str(exe),
            "--insecure",
            "--proto",
            str(proto),
            "--import-paths",
            str(proto.parent),
            "--call",
            call,
            "--binary-file",
            str(body),
            "-c",
            str(concurrency),
            "--connections",
            str(connections),
            "-z",
            f"{max(1, round(duration_s))}s",
            "-t",
            f"{max(1, round(timeout_s))}s",
            "--duration-stop",
            "wait",
            "--format",
            "json",
            target,
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120, check=False)
        except subprocess.TimeoutExpired as err:
            raise GhzError("ghz did not finish in time") from err
    if proc.returncode != 0 and not proc.stdout.strip().startswith("{"):
        raise GhzError(f"ghz exited with code {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return parse_report(proc.stdout, concurrency=concurrency, connections=connections)


if (
    __name__ == "__main__"
):  # ``python3 -m loadtests.ghz``: build (or find) ghz, print its path (scripts/setup.sh)
    try:
        print(binary())
    except GhzError as err:
        raise SystemExit(f"ghz: {err}") from err
