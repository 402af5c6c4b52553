"""Locust scenarios for ferryman: inference traffic from the sample dataset, with sticky A/B users.

Run it through ``ferryman loadtest`` (which sets everything below and gates the result), or directly::

    FERRYMAN_LT_PROTOCOL=v2-binary FERRYMAN_LT_SHAPE=spike \\
        locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 -u 50 -r 10 -t 60s

Settings (environment variables, inherited by ``--processes`` workers):

* ``FERRYMAN_LT_PROTOCOL`` — ``v2`` (JSON tensors, default), ``v2-binary`` or ``v1``.
* ``FERRYMAN_LT_MODEL`` / ``FERRYMAN_LT_INPUT`` / ``FERRYMAN_LT_VERSION`` — model name (breast-cancer),
  input tensor name (input), optional pinned version.
* ``FERRYMAN_LT_DATA`` — ``traffic.npy`` (or the directory of ``ferryman examples export``); without it the
  rows come from scikit-learn's bundled breast-cancer dataset.
* ``FERRYMAN_LT_ROWS`` — rows per request (1).
* ``FERRYMAN_LT_SHAPE`` — ``steady``, ``ramp`` or ``spike`` (see ``loadtests.shapes``); unset: Locust's own
  ``-u/-r/-t`` behaviour.
* ``FERRYMAN_LT_RATE`` — requests per second per user (``constant_throughput``); 0 = back to back.
* ``FERRYMAN_LT_TIMES_DIR`` — where every process writes the exact time of each request
  (``exact-*.npz``: ``times_ms`` float64, ``failed`` bool) for the budget gate. Locust's own statistics
  round 100 ms-1 s to 10 ms; these do not.

Each simulated user has its own stable ``x-user-id`` header, so a sticky A/B split keeps it on one arm.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from array import array
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import FastHttpUser, LoadTestShape, constant, constant_throughput, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `locust -f` only adds loadtests/ itself

from loadtests import payloads, shapes

PROTOCOL = os.environ.get("FERRYMAN_LT_PROTOCOL", "v2")
MODEL = os.environ.get("FERRYMAN_LT_MODEL", payloads.DEFAULT_MODEL)
INPUT = os.environ.get("FERRYMAN_LT_INPUT", payloads.DEFAULT_INPUT)
VERSION = os.environ.get("FERRYMAN_LT_VERSION") or None
ROWS = int(os.environ.get("FERRYMAN_LT_ROWS", "1"))
RATE = float(os.environ.get("FERRYMAN_LT_RATE", "0") or 0)
SHAPE = os.environ.get("FERRYMAN_LT_SHAPE", "")
TIMES_DIR = os.environ.get("FERRYMAN_LT_TIMES_DIR", "")


def _rows() -> np.ndarray:
    data = os.environ.get("FERRYMAN_LT_DATA")
    if data:
        return payloads.load_rows(data)
    from sklearn.datasets import load_breast_cancer

    return np.ascontiguousarray(load_breast_cancer(return_X_y=True)[0], dtype=np.float32)


def _payloads() -> list[payloads.Payload]:
    rows = _rows()
    rng = np.random.default_rng(os.getpid())
    picks = rng.integers(0, len(rows), size=(256, ROWS))
    return [
        payloads.build(rows[idx], protocol=PROTOCOL, model=MODEL, input_name=INPUT, version=VERSION)
        for idx in picks
    ]


PAYLOADS = _payloads()
MARKER = payloads.expected_marker(PROTOCOL)
REQUEST_NAME = f"{PROTOCOL} infer"


class InferenceUser(FastHttpUser):
    """One client with a sticky A/B key, sending inference requests back to back (or at FERRYMAN_LT_RATE)."""

    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.user_id = f"lt-{uuid.uuid4().hex[:12]}"
        self.turn = int(uuid.uuid4().int % len(PAYLOADS))

    @task
    def infer(self) -> None:
        self.turn = (self.turn + 1) % len(PAYLOADS)
        p = PAYLOADS[self.turn]
        headers = {**p.headers, "x-user-id": self.user_id}
        with self.client.request(
            p.method,
            p.path,
            data=p.body,  # type: ignore[arg-type]  # bytes are sent as they are
            headers=headers,
            name=REQUEST_NAME,  # type: ignore[arg-type]
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:120]}")
            elif MARKER not in (resp.content or b""):
                resp.failure("response carries no outputs")
            else:
                resp.success()


# -- exact per-request times for the budget gate -------------------------------------------------------
_times = array("d")
_failed = array("b")
_names: dict[int, str] = {}


def _file_name() -> str:
    """One file per process, named when it first flushes: ``--processes`` workers are forked after import."""
    pid = os.getpid()
    if pid not in _names:
        _names[pid] = f"exact-{socket.gethostname()}-{pid}-{uuid.uuid4().hex[:8]}.npz"
    return _names[pid]


@events.request.add_listener
def _record(response_time: float | None = None, exception: Any = None, **_: Any) -> None:
    _times.append(float(response_time) if response_time is not None else float("nan"))
    _failed.append(1 if exception is not None else 0)


def _flush(**_: Any) -> None:
    if not TIMES_DIR:
        return
    out = Path(TIMES_DIR)
    out.mkdir(parents=True, exist_ok=True)
    times = np.frombuffer(_times, dtype=np.float64) if len(_times) else np.empty(0, dtype=np.float64)
    failed = np.frombuffer(_failed, dtype=np.int8).astype(bool) if len(_failed) else np.empty(0, dtype=bool)
    name = _file_name()
    tmp = out / f".{name}.tmp.npz"
    np.savez(tmp, times_ms=times, failed=failed)
    tmp.replace(out / name)


events.test_stop.add_listener(_flush)
events.quitting.add_listener(_flush)


@events.init.add_listener
def _fresh_clock(**_: Any) -> None:
    """Refresh gevent's cached loop time before Locust arms its --run-time timer.

    The hub is created when Locust is imported; when importing takes longer than the run time (a loaded
    machine, no bytecode cache), a timer armed on the stale clock fires at once and the test ends early.
    """
    gevent.get_hub().loop.update_now()


# -- load shapes (exactly one is visible to Locust, chosen by FERRYMAN_LT_SHAPE) -----------------------
class _Shape(LoadTestShape):
    abstract = True
    use_common_options = True
    kind = "steady"

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        return shapes.users_at(
            self.kind,
            self.get_run_time(),
            users=int(getattr(options, "num_users", None) or 1),
            spawn_rate=float(getattr(options, "spawn_rate", None) or 1.0),
            run_time_s=float(getattr(options, "run_time", None) or shapes.DEFAULT_RUN_TIME_S),
        )


if SHAPE:
    if SHAPE not in shapes.SHAPES:
        raise SystemExit(f"FERRYMAN_LT_SHAPE={SHAPE!r}: choose from {', '.join(shapes.SHAPES)}")
    ScenarioShape = type(
        f"{SHAPE.title()}Shape",
        (_Shape,),
        {"abstract": False, "kind": SHAPE, "__doc__": f"the {SHAPE} scenario"},
    )
