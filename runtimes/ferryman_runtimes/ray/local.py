"""The Ray launcher in a subprocess of its own, for benchmarks and tests: :func:`start_local` runs
``python -m ferryman_runtimes.ray SPEC --port P`` (:mod:`.launcher`) and returns a :class:`LocalRay` once
it printed ``READY``; ``.stop()`` shuts it down and reaps its Ray instance."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ferryman import processes
from ferryman.errors import FerrymanError
from ferryman_runtimes.ray.deploy import DEPLOY_TIMEOUT_S, ENV_INSTANCE, reap


@dataclass
class LocalRay:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    instance: str = ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the launcher shuts Serve and Ray down), then SIGKILL its process group if it hangs."""
        processes.stop(self.process, timeout=timeout, kill_group=True)  # SIGTERM to the launcher alone
        if self.instance:
            reap(self.instance, grace=0.0)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalRay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(
    spec: str | Path, *, port: int, host: str = "127.0.0.1", extra: list[str] | None = None
) -> list[str]:
    """The exact command :func:`start_local` runs (``python -m ferryman_runtimes.ray``)."""
    return [
        sys.executable,
        "-m",
        "ferryman_runtimes.ray",
        str(spec),
        "--host",
        host,
        "--port",
        str(port),
        *(extra or []),
    ]


def start_local(
    spec_path: str | Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = DEPLOY_TIMEOUT_S,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> LocalRay:
    """Run the spec on a fresh local Ray instance in a subprocess; return once it is ready. Call
    ``.stop()``."""
    fd, name = tempfile.mkstemp(prefix="ferryman-ray-", suffix=".log")
    log_path = Path(name)
    instance = uuid.uuid4().hex
    with os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(
            command(spec_path, port=port, host=host, extra=extra_args),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), ENV_INSTANCE: instance},
        )
    handle = LocalRay(url=f"http://{host}:{port}", process=process, log_path=log_path, instance=instance)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FerrymanError(
                    f"the Ray launcher exited with {process.returncode}:\n{handle.output()[-4000:]}"
                )
            if "READY " in handle.output():
                return handle
            time.sleep(0.3)
        raise FerrymanError(
            f"the Ray launcher was not ready within {timeout:.0f}s:\n{handle.output()[-4000:]}"
        )
    except BaseException:
        handle.stop()
        raise
