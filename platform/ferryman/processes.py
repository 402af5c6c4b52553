"""Subprocesses and ports, for everything that starts a server and waits for it: the demo, the Ray
launcher's local harness, the load tests and the tests.

    port = free_port()                                   # free a moment ago (bind to 0): bind it soon
    port = free_port_below_ephemeral(count=3)            # for a server that binds long after (a local Ray)
    process = start(argv, log_path=path, env=..., new_session=True)   # stdout and stderr into the log
    wait_http(url, timeout=60, alive=lambda: process.poll() is None)  # until it answers 200
    stop(process, group=True)                            # SIGTERM, wait, SIGKILL (the whole group)
    stop_pid(pid)                                        # the same for a process that is not our child

Failures raise :class:`ServerFailed` with what was last seen; callers add the process's output.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message says what was last seen."""


# -- ports ------------------------------------------------------------------------------------------
def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to 0, read it, release it). It comes from
    the ephemeral range, so bind it soon; see :func:`free_port_below_ephemeral` otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ephemeral_range_start() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections and bind-to-0 draw from it)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_below_ephemeral(host: str = HOST, *, count: int = 1, lowest: int = 20_000) -> int:
    """The first of ``count`` consecutive ports on ``host`` that are free now and lie below the ephemeral
    range.

    For a server that binds long after its port was chosen while other processes open connections: Ray
    binds its proxy and direct-ingress ports some 20 s later while its own processes open hundreds of
    connections, and a port drawn from the ephemeral range can be taken by one of them meanwhile. No
    connection is ever given a port below the range.
    """
    high = ephemeral_range_start() - count
    rng = random.Random()
    for _ in range(500):
        if high <= lowest:
            break
        first = rng.randrange(lowest, high)
        if all(port_is_free(host, p) for p in range(first, first + count)):
            return first
    raise ServerFailed(f"no {count} consecutive free ports on {host} between {lowest} and {high + count}")


# -- start, wait, stop ------------------------------------------------------------------------------
def start(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Run ``argv`` with stdout and stderr in ``log_path`` (truncated) and unbuffered Python output.
    ``new_session`` puts it in a process group of its own, which ``stop(..., group=True)`` signals whole."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
        )


def wait_http(
    url: str,
    *,
    timeout: float = 60.0,
    status: int = 200,
    alive: Callable[[], bool] | None = None,
    verify: Any = True,
    headers: Mapping[str, str] | None = None,
    interval: float = 0.1,
) -> httpx.Response:
    """Poll ``url`` until it answers ``status`` and return that answer; ``alive()`` turning False (the
    server exited) ends the wait at once. Raises :class:`ServerFailed` with the last answer or error."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServerFailed(f"the server exited while waiting for {url} (last: {last})")
        try:
            resp = httpx.get(url, timeout=3.0, verify=verify, headers=dict(headers or {}))
            if resp.status_code == status:
                return resp
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as err:
            last = type(err).__name__
        time.sleep(interval)
    raise ServerFailed(f"{url} did not answer {status} within {timeout:.0f}s (last: {last})")


def _signal(process: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def stop(
    process: subprocess.Popen[bytes],
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 20.0,
    group: bool = False,
    kill_group: bool | None = None,
) -> int:
    """Send ``sig`` (SIGTERM: a clean shutdown), wait up to ``timeout``, then SIGKILL; returns the exit code.

    ``group``: send ``sig`` to the process group the process leads (``start(..., new_session=True)``), not
    to the process alone. ``kill_group`` (default: ``group``): the SIGKILL goes to the group too, and what
    is left of the group once the process exited is killed (a worker that ignored the signal).
    """
    kill_group = group if kill_group is None else kill_group
    if process.poll() is None:
        _signal(process, sig, group=group)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL, group=kill_group)
            process.wait(timeout=timeout)
    if kill_group:
        _signal(process, signal.SIGKILL, group=True)
    return int(process.returncode)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: signal 0 is all we know
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> bool:
    """:func:`stop` for a process that is not our child (no exit code to wait for: its pid is polled).
    Returns whether it had to be killed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.05)
    return True
