"""Server subprocesses for load tests and benchmarks: start, wait until ready, stop (the whole group).

Each server runs in its own session so that :meth:`ServerProcess.stop` can signal the process group it
started (uvicorn workers, Ray's raylet and workers) and nothing else. Output goes to a log file whose tail
is quoted when a server fails to start.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ferryman import processes
from ferryman.processes import HOST, ServerFailed, free_port, wait_http

__all__ = [
    "HOST",
    "ServerFailed",
    "ServerProcess",
    "ferryman_argv",
    "ferryman_help",
    "free_port",
    "local_ferryman",
    "running",
    "wait_http",
]


def ferryman_argv() -> list[str]:
    """This venv's ``ferryman`` console script (so CLI extensions register exactly as for a user)."""
    script = Path(sys.executable).with_name("ferryman")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ferryman.cli.main"]


@functools.cache
def ferryman_help(command: str) -> str | None:
    """``ferryman COMMAND --help`` text, or None when the command does not exist (yet)."""
    try:
        out = subprocess.run(
            [*ferryman_argv(), command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def local_ferryman(spec: Path, *, state_dir: Path, startup_timeout: float = 120.0) -> ServerProcess:
    """``ferryman up SPEC`` (gateway, rollout, metrics, drift) when available, else ``ferryman serve SPEC``.

    ``state_dir`` is emptied first, so every run starts its rollout afresh.
    """
    shutil.rmtree(state_dir, ignore_errors=True)
    port = free_port()
    options = ferryman_help("up")
    if options is None:
        argv = [*ferryman_argv(), "serve", str(spec), "--host", HOST, "--port", str(port)]
    else:
        argv = [*ferryman_argv(), "up", str(spec), "--port", str(port)]
        for flag, value in (
            ("--host", HOST),
            ("--admin-port", str(free_port())),
            ("--state-dir", str(state_dir)),
        ):
            if flag in options:
                argv += [flag, value]
    return ServerProcess(argv, port=port, startup_timeout=startup_timeout)


class ServerProcess:
    """One server subprocess on ``port``, ready when ``GET ready_path`` answers 200."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        ready_path: str = "/v2/health/ready",
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.startup_timeout = startup_timeout
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="ferryman-bench-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        t0 = time.monotonic()
        self.process = processes.start(
            self.argv, log_path=self.log_path, env=self.env, cwd=self.cwd, new_session=True
        )
        try:
            wait_http(
                self.url + self.ready_path, timeout=self.startup_timeout, alive=self.alive, interval=0.2
            )
        except ServerFailed as err:
            self.stop()
            raise ServerFailed(f"{err}\n--- output ---\n{self.output()}") from err
        self.startup_seconds = time.monotonic() - t0

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout``; children left in the group
        (a worker that ignored SIGTERM) go too."""
        if self.process is not None:
            processes.stop(self.process, timeout=timeout, group=True)

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
