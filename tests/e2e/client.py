"""The host's client: v2 inference requests to a gateway's ClusterIP, counting who answered and what failed.

* :func:`infer_body` — one v2 JSON request of sample rows.
* :func:`sample` — ``n`` sequential requests; a Counter of ``model_version`` (and failures by reason).
* :class:`Background` — a thread calling the gateway until stopped (at most ``rate`` requests a second);
  ``.stats()`` gives answers per version and every failure (status code or exception, with its time), so a
  test can assert zero failed requests during a rollback or bound them during a fault.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson

TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def infer_body(rows: np.ndarray) -> bytes:
    data = np.ascontiguousarray(rows, dtype=np.float32)
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(data.shape),
                    "datatype": "FP32",
                    "data": data.ravel().tolist(),
                }
            ]
        }
    )


def infer_url(base: str, model: str) -> str:
    return f"{base.rstrip('/')}/v2/models/{model}/infer"


@dataclass
class Result:
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, reason)

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + len(self.failures)


def _one(client: httpx.Client, url: str, body: bytes, result: Result) -> None:
    try:
        resp = client.post(url, content=body, headers={"content-type": "application/json"})
    except httpx.HTTPError as err:
        result.failures.append((time.monotonic(), f"{type(err).__name__}: {err}"))
        return
    if resp.status_code != 200:
        result.failures.append((time.monotonic(), f"HTTP {resp.status_code}: {resp.text[:200]}"))
        return
    result.versions[str(resp.json().get("model_version"))] += 1


def sample(base: str, model: str, rows: np.ndarray, n: int) -> Result:
    """``n`` requests one after the other (rows cycled)."""
    result = Result()
    bodies = [infer_body(rows[i : i + 1]) for i in range(min(len(rows), 64))]
    with httpx.Client(timeout=TIMEOUT) as client:
        for i in range(n):
            _one(client, infer_url(base, model), bodies[i % len(bodies)], result)
    return result


class Background:
    """Calls the gateway from a thread until :meth:`stop`; at most ``rate`` requests a second."""

    def __init__(self, base: str, model: str, rows: np.ndarray, *, rate: float = 20.0) -> None:
        self.url = infer_url(base, model)
        self.bodies = [infer_body(rows[i : i + 1]) for i in range(min(len(rows), 64))]
        self.period = 1.0 / rate
        self._result = Result()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"e2e-client-{model}")

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT) as client:
            i = 0
            while not self._stop.is_set():
                t0 = time.monotonic()
                one = Result()
                _one(client, self.url, self.bodies[i % len(self.bodies)], one)
                with self._lock:
                    self._result.versions.update(one.versions)
                    self._result.failures.extend(one.failures)
                i += 1
                self._stop.wait(max(0.0, self.period - (time.monotonic() - t0)))

    def stats(self) -> Result:
        with self._lock:
            return Result(versions=Counter(self._result.versions), failures=list(self._result.failures))

    def stop(self) -> Result:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.stats()
