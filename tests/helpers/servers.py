"""Real servers for tests: ``ferryman`` subprocesses and in-thread uvicorn, with readiness waits and teardown.

* :func:`ferryman_command` — argv prefix that runs the installed ``ferryman`` CLI of this venv.
* :func:`run_ferryman` — run a CLI command to completion (e.g. ``validate``, a ``serve`` expected to fail).
* :func:`serve_cli` — context manager: ``ferryman serve TARGET --port <free> ...`` in a subprocess, waits
  until ``/v2/health/ready`` answers 200 (fails fast with the server's output if it exits), yields a
  :class:`CliServer` (``.url``, ``.port``, ``.process``, ``.output()``) and terminates it on exit.
* :func:`serve_app` — context manager: any ASGI app under uvicorn in a background thread on a
  race-free ephemeral port; yields a :class:`ThreadedServer` (``.url``, ``.port``) and shuts it down.
* :func:`wait_http`, :class:`ServerFailed` — :mod:`ferryman.processes`' (poll a URL until it answers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferryman.processes import ServerFailed, stop, wait_http
from tests.helpers.ports import bound_socket, free_port

__all__ = [
    "CliServer",
    "ServerFailed",
    "ThreadedServer",
    "ferryman_command",
    "run_ferryman",
    "serve_app",
    "serve_cli",
    "wait_http",
]

HOST = "127.0.0.1"


def ferryman_command() -> list[str]:
    """The argv prefix for this venv's ``ferryman`` console script (falls back to ``python -m``)."""
    script = Path(sys.executable).with_name("ferryman")
    if script.is_file():
        return [str(script)]
    found = shutil.which("ferryman")
    if found:
        return [found]
    return [sys.executable, "-m", "ferryman.cli.main"]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "200")  # rich wraps error messages at 80 columns otherwise
    if extra:
        env.update(extra)
    return env


def run_ferryman(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``ferryman ARGS`` to completion and return it (stdout/stderr captured as text)."""
    return subprocess.run(
        [*ferryman_command(), *args],
        env=_env(env),
        timeout=timeout,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass
class CliServer:
    """A ``ferryman serve`` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    url: str = field(init=False)
    final_output: str | None = None

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}"

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far (kept after it stopped)."""
        if self.final_output is not None:
            return self.final_output
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def serve_cli(
    target: str | Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_path: str = "/v2/health/ready",
    timeout: float = 60.0,
) -> Iterator[CliServer]:
    """Start ``ferryman serve TARGET --port <free> ARGS`` and yield it once ``ready_path`` answers 200."""
    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix="ferryman-serve-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [*ferryman_command(), "serve", str(target), "--host", HOST, "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(env),
        )
    server = CliServer(process=process, port=port, log_path=log_path)
    try:
        try:
            wait_http(server.url + ready_path, timeout=timeout, alive=server.alive)
        except ServerFailed as err:
            raise ServerFailed(f"{err}\n--- server output ---\n{server.output()}") from err
        yield server
    finally:
        stop(process, timeout=10.0)
        server.final_output = server.output()
        log_path.unlink(missing_ok=True)


@dataclass
class ThreadedServer:
    """An ASGI app served by uvicorn in a daemon thread."""

    port: int
    server: Any  # uvicorn.Server
    thread: threading.Thread
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def serve_app(app: Any, *, timeout: float = 30.0, **config: Any) -> Iterator[ThreadedServer]:
    """Serve ``app`` with uvicorn in a thread (extra kwargs go to ``uvicorn.Config``)."""
    import uvicorn

    sock = bound_socket()
    port = int(sock.getsockname()[1])
    options: dict[str, Any] = {"lifespan": "on", "log_level": "warning", "access_log": False}
    options.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # surfaced to the test below
            errors.append(err)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if errors or not thread.is_alive():
                raise ServerFailed(f"uvicorn thread exited before starting: {errors!r}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"uvicorn did not start within {timeout}s")
            time.sleep(0.02)
        yield ThreadedServer(port=port, server=server, thread=thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# the gRPC transports every gRPC test runs against (``--grpc-transport``; ferryman_runtimes.grpc.server)
GRPC_TRANSPORTS = ("native", "grpcio")
