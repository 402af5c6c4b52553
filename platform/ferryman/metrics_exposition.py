"""``GET /metrics`` and prometheus_client's multiprocess mode.

    routes() -> {("GET", "/metrics"): metrics_endpoint}    # InferenceApp(extra_routes=routes())
    await metrics_endpoint(request, receive, send)         # raw ASGI handler for GET /metrics
    exposition() -> (body: bytes, content_type: str)       # the scrape body, single- or multi-process
    prepare_multiprocess(directory=None) -> Path           # call in the parent BEFORE spawning workers
    cleanup_multiprocess(directory)                        # in the parent after the workers exited

Multi-process (``ferryman serve --workers N``): each worker writes its samples to mmap files in
``PROMETHEUS_MULTIPROC_DIR`` and any worker answering ``/metrics`` merges all of them, so a scrape counts
every request exactly once whichever worker serves it. Live-mode gauges of workers that have exited are
reaped at scrape time (``mark_process_dead``); counters and histograms of an exited worker are kept, so no
sample is lost. Without the env var everything lives in process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from ferryman import metrics
from ferryman._compat.prometheus import multiprocess_values, reload_value_class
from ferryman.metrics_flush import ENV_MULTIPROC, flush_all, multiprocess_dir
from ferryman.processes import pid_alive

# The classic text format every Prometheus 2.x parses (prometheus_client 0.26 defaults to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def reap_dead_workers(directory: str) -> list[int]:
    """``mark_process_dead`` for every worker whose live-gauge files remain but whose process is gone."""
    from prometheus_client import multiprocess

    dead = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        m = _LIVE_FILE.match(os.path.basename(path))
        if m and not pid_alive(int(m.group(1))):
            dead.add(int(m.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return sorted(dead)


def exposition() -> tuple[bytes, str]:
    """The text exposition: this process's registry, or every worker's samples in multiprocess mode."""
    directory = multiprocess_dir()
    if directory is None:
        metrics.default()
        return prometheus_client.generate_latest(prometheus_client.REGISTRY), CONTENT_TYPE
    from prometheus_client import multiprocess

    flush_all()  # this worker's counts; the others publish theirs on their timers
    reap_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return prometheus_client.generate_latest(registry), CONTENT_TYPE


async def metrics_endpoint(request: Any, receive: Any, send: Any) -> None:
    """Raw ASGI handler for ``GET /metrics`` (no framework; usable as an InferenceApp extra route).

    Rendering a scrape costs milliseconds of pure Python; it runs in a worker thread so the event loop
    keeps serving requests in between (at worst one GIL switch interval of delay, instead of the whole
    render)."""
    body, content_type = await asyncio.get_running_loop().run_in_executor(None, exposition)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def routes() -> dict[tuple[str, str], Any]:
    return {("GET", "/metrics"): metrics_endpoint}


def prepare_multiprocess(directory: str | Path | None = None) -> Path:
    """Point prometheus_client at a clean shared directory; call before spawning server workers.

    Uses ``directory``, else an existing ``PROMETHEUS_MULTIPROC_DIR``, else a new temporary directory.
    Stale ``*.db`` files from a previous run are removed (they would otherwise be counted again).
    """
    if metrics.default_created() and not multiprocess_values():
        raise RuntimeError(
            "prepare_multiprocess() must run before ferryman metrics are created in this process"
        )
    chosen = Path(directory or multiprocess_dir() or tempfile.mkdtemp(prefix="ferryman-metrics-"))
    chosen.mkdir(parents=True, exist_ok=True)
    for stale in chosen.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    os.environ[ENV_MULTIPROC] = str(chosen)
    reload_value_class()
    return chosen


def cleanup_multiprocess(directory: str | Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
