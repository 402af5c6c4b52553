"""Drive ``wrk`` (closed loop, C, fast enough not to be the bottleneck at ~20k req/s on one thread).

A generated Lua script loads the request body from a file (binary bodies included), sets the headers and,
in ``done()``, prints one JSON line with the request count, error counters and latency percentiles in
microseconds (wrk's own histogram, 1 µs resolution), so nothing is parsed out of human-readable text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.payloads import Payload

MARKER = "FERRYMAN_WRK "

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FERRYMAN_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.3f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int  # wrk's "status" errors: responses with a status >= 400
    socket_errors: int  # connect + read + write + timeouts

    @property
    def error_rate(self) -> float:
        total = self.requests + self.socket_errors
        return (self.non_2xx + self.socket_errors) / total if total else 1.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise WrkError("wrk is not installed (apt-get install wrk; scripts/system-deps.sh)")
    return found


def lua_script(payload: Payload, body_file: Path) -> str:
    """The wrk script that sends ``payload`` (body read from ``body_file``) and reports as JSON."""
    lines = [
        f'local f = assert(io.open({json.dumps(str(body_file))}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
        f"wrk.method = {json.dumps(payload.method)}",
    ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in payload.headers.items()]
    return "\n".join(lines) + "\n" + _DONE


def parse_output(stdout: str, *, connections: int) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            doc = json.loads(line[len(MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no result:\n{stdout[-2000:]}")
    seconds = doc["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=doc["requests"],
        duration_s=seconds,
        rps=doc["requests"] / seconds if seconds > 0 else 0.0,
        p50_ms=doc["p50_us"] / 1000,
        p90_ms=doc["p90_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        max_ms=doc["max_us"] / 1000,
        mean_ms=doc["mean_us"] / 1000,
        non_2xx=doc["status_errors"],
        socket_errors=doc["connect_errors"] + doc["read_errors"] + doc["write_errors"] + doc["timeouts"],
    )


def run(
    base_url: str,
    payload: Payload,
    *,
    duration_s: float,
    connections: int = 16,
    threads: int = 1,
    timeout_s: float = 2.0,
    tick: Callable[[float], None] | None = None,
) -> WrkResult:
    """``wrk -t{threads} -c{connections} -d{duration}`` against ``base_url + payload.path``."""
    exe = wrk_binary()
    with tempfile.TemporaryDirectory(prefix="ferryman-wrk-") as tmp:
        body_file = Path(tmp) / "body.bin"
        body_file.write_bytes(payload.body)
        script = Path(tmp) / "request.lua"
        script.write_text(lua_script(payload, body_file))
        argv = [
            exe,
            f"-t{threads}",
            f"-c{max(connections, threads)}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(script),
            base_url.rstrip("/") + payload.path,
        ]
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            try:
                while proc.poll() is None:
                    if tick is not None:
                        tick(time.monotonic() - t0)
                    time.sleep(0.1)
                    if time.monotonic() - t0 > duration_s + 60:
                        proc.kill()
                        raise WrkError("wrk did not finish in time")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            out.seek(0)
            text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with code {proc.returncode}:\n{text[-2000:]}")
    return parse_output(text, connections=connections)
