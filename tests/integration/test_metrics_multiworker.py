"""`ferryman serve --workers 2`: /metrics aggregates every worker, no double counting, no lost samples."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.helpers.gateway import wait_until
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.servers import CliServer, serve_cli

MODEL = "breast-cancer"
GOOD = 400
BAD = 37


@pytest.fixture
def spec_without_drift(sample_spec: Path, tmp_path: Path) -> Path:
    doc = yaml.safe_load(sample_spec.read_text())
    for v in doc["spec"]["versions"]:  # absolute paths: the copy lives elsewhere
        v["uri"] = str((sample_spec.parent / v["uri"]).resolve())
        v.pop("referenceData", None)
    doc["spec"]["drift"] = {"enabled": False}
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def send(url: str, rows: np.ndarray, *, good: int, bad: int, threads: int = 8) -> list[int]:
    """``good`` valid and ``bad`` invalid requests over ``threads`` keep-alive connections."""
    codes: list[int] = []
    lock = threading.Lock()
    jobs = [True] * good + [False] * bad

    def worker(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(index, len(jobs), threads):
                if jobs[i]:
                    body = {
                        "inputs": [
                            {
                                "name": "input",
                                "shape": [1, 30],
                                "datatype": "FP32",
                                "data": rows[i % len(rows)].tolist(),
                            }
                        ]
                    }
                else:
                    body = {
                        "inputs": [
                            {"name": "input", "shape": [1, 29], "datatype": "FP32", "data": [0.0] * 29}
                        ]
                    }
                r = client.post(f"/v2/models/{MODEL}/infer", json=body)
                with lock:
                    codes.append(r.status_code)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    return codes


def scrape(server: CliServer) -> dict:
    # a new connection each time, so successive scrapes land on different workers
    with httpx.Client(timeout=30) as client:
        resp = client.get(server.url + "/metrics", headers={"connection": "close"})
    assert resp.status_code == 200
    return parse_exposition(resp.text)


def worker_pids(directory: Path, kind: str = "counter") -> set[int]:
    return {
        int(m.group(1))
        for p in directory.glob(f"{kind}_*.db")
        if (m := re.match(rf"{kind}_(\d+)\.db", p.name))
    }


def wait_for_workers(directory: Path, n: int, *, timeout: float = 120) -> set[int]:
    """Each worker reports its versions ready (a live gauge file named after its pid) once it has loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(directory, "gauge_livemin")
        if len(pids) >= n:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"{n} workers did not come up within {timeout}s")


def until_every_worker_served(url: str, directory: Path, workers: set[int], rows: np.ndarray) -> int:
    """More good requests, each batch over new connections, until every worker in ``workers`` has served
    some (its counter file appears at its next flush); the number sent. The kernel hands a new connection to
    whichever worker accepts first: on a busy machine one worker can take all of a batch's connections."""
    sent = 0

    def served() -> bool:
        nonlocal sent
        if worker_pids(directory) == workers:
            return True
        codes = send(url, rows, good=8, bad=0)
        assert codes.count(200) == 8, codes
        sent += 8
        return False

    wait_until(served, timeout=300, interval=0.5, what=f"every worker of {sorted(workers)} serving requests")
    return sent


def assert_totals(server: CliServer, *, good: int, bad: int, scrapes: int = 12) -> None:
    # each worker folds its pending request metrics on a short timer (and the scraped one at the scrape)
    wait_until(
        lambda: sample_sum(scrape(server), "ferryman_requests_total", model=MODEL) == good + bad,
        timeout=30,
        interval=0.2,
        what="every worker's request metrics folded in",
    )
    for _ in range(scrapes):
        s = scrape(server)
        assert sample_sum(s, "ferryman_requests_total", model=MODEL, code="200") == good
        assert sample_sum(s, "ferryman_requests_total", model=MODEL, code="400") == bad
        assert sample_sum(s, "ferryman_requests_total", model=MODEL) == good + bad
        assert sample_sum(s, "ferryman_request_duration_seconds_count", model=MODEL) == good + bad
        assert sample_sum(s, "ferryman_request_duration_seconds_bucket", model=MODEL, le="+Inf") == good + bad
        assert sample_sum(s, "ferryman_model_compute_duration_seconds_count", model=MODEL) == good
        assert sample_sum(s, "ferryman_predictions_total", model=MODEL) == good
        assert sample_sum(s, "ferryman_requests_in_flight", model=MODEL) == 0
        assert sample_sum(s, "ferryman_model_ready", model=MODEL, version="v1") == 1  # min over live workers


def test_two_workers_scrape_exact_totals_and_survive_a_worker_crash(
    spec_without_drift: Path, traffic: np.ndarray, tmp_path: Path
) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale file of an earlier run")
    with serve_cli(
        spec_without_drift,
        args=["--workers", "2"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        timeout=120,
    ) as server:
        assert not (directory / "counter_999999.db").exists()  # wiped at start: not counted again
        ready = wait_for_workers(directory, 2)
        codes = send(server.url, traffic, good=GOOD, bad=BAD)
        assert codes.count(200) == GOOD and codes.count(400) == BAD
        good = GOOD + until_every_worker_served(server.url, directory, ready, traffic)
        pids = worker_pids(directory)
        assert pids == ready, f"expected both workers {ready} to have served requests, counters from {pids}"
        assert server.process.pid not in pids
        assert_totals(server, good=good, bad=BAD)

        # a worker dies abruptly: its counts stay, its live gauges are reaped, uvicorn starts a new one
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                os.kill(victim, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        assert_totals(server, good=good, bad=BAD)
        assert not list(directory.glob(f"gauge_live*_{victim}.db"))

        more = send(server.url, traffic, good=150, bad=0)
        assert more.count(200) == 150
        assert_totals(server, good=good + 150, bad=BAD)
    assert "Traceback" not in server.output(), server.output()
