"""Per-version request stats from every Ray ingress replica, fanned in to one exact ``Accounting``.

The local rollout driver (``ferryman up --runtime ray``) needs what the gateway's in-process
:class:`~ferryman.accounting.Accounting` gives it, but on Ray requests finish in the ingress replicas.
So each replica gets a :class:`StatsShipper` observer: on the hot path it only appends a small tuple
(version, route, code, seconds, finish time) to a deque; a background thread drains it a few times a
second and ships the batch to ONE named actor, a :class:`StatsHub` holding the ``Accounting`` the driver
reads (``window`` for ``rollout.tick``, ``totals`` for ``status``). No request ever waits for the actor.

Records are stamped with their own finish time (wall clock: every process is on this one machine), clamped
to never go backwards, so a window since a step's start counts what finished after it, give or take the
interleaving of two replicas' batches (at most one shipping interval, at a step boundary only).

Ray is imported only by :func:`start_hub` and :func:`actor_sender`; the rest is plain Python.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from ferryman.accounting import Accounting, RouteTotals
from ferryman.analysis import VersionStats
from ferryman.protocol.tensor import InferRequest, InferResponse
from ferryman.telemetry import RequestObserver, RequestRecord

log = logging.getLogger("ferryman.ray")

NAMESPACE = "ferryman"
SHIP_INTERVAL_S = 0.25
MAX_PENDING = 1_000_000  # rows a replica holds while the hub is unreachable; beyond this the oldest go
SEND_TIMEOUT_S = 30.0

Row = tuple[str, str, int, float, float]  # version, route, HTTP code, seconds, finished at (time.time())
Counters = tuple[int, int, int]  # shadow copies sent, failed, dropped (cumulative, per replica)
Send = Callable[[list[Row], Counters, int], None]


def hub_name(model: str) -> str:
    return f"ferryman-stats-{model}"


class StatsHub:
    """The fan-in point (run as a named Ray actor): one ``Accounting`` over every replica's records."""

    def __init__(self, *, model: str, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self._clock = clock
        self._stamp: float | None = None
        self._last = 0.0
        self.accounting = Accounting(clock=self._time)
        self._shadow: dict[str, Counters] = {}
        self._dropped: dict[str, int] = {}
        self.received = 0

    def _time(self) -> float:
        # while records are ingested, Accounting stamps each with its own finish time
        return self._stamp if self._stamp is not None else self._clock()

    def record(self, replica: str, rows: list[Row], shadow: Counters = (0, 0, 0), dropped: int = 0) -> int:
        """Add one replica's batch; ``shadow`` and ``dropped`` are that replica's running totals."""
        finished = self.accounting.finished
        try:
            for version, route, code, seconds, at in rows:
                self._last = max(self._last, at)  # never backwards: windows are found by binary search
                self._stamp = self._last
                finished(
                    RequestRecord(
                        model=self.model,
                        version=version,
                        route=route,
                        protocol="",
                        code=code,
                        seconds=seconds,
                    ),
                    None,
                    None,
                )
        finally:
            self._stamp = None
        self._shadow[replica] = (int(shadow[0]), int(shadow[1]), int(shadow[2]))
        self._dropped[replica] = int(dropped)
        self.received += len(rows)
        return self.received

    def now(self) -> float:
        return self._clock()

    def window(self, version: str, since: float) -> VersionStats:
        return self.accounting.window(version, since=since)

    def totals(self) -> list[RouteTotals]:
        return self.accounting.totals()

    def shadow(self) -> dict[str, int]:
        """Shadow copies over every replica that ever reported (a replaced replica keeps its last totals)."""
        sent, failed, dropped = (sum(c[i] for c in self._shadow.values()) for i in range(3))
        return {
            "requests": sent,
            "errors": failed,
            "dropped": dropped,
            "statsDropped": sum(self._dropped.values()),
        }


class StatsShipper(RequestObserver):
    """A request observer for an ingress replica: append on the hot path, ship in bulk from a thread."""

    def __init__(
        self,
        send: Send,
        *,
        interval: float = SHIP_INTERVAL_S,
        counters: Callable[[], Counters] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._send = send
        self.interval = interval
        self.counters = counters  # the replica's shadow counters, read when a batch is shipped
        self.max_pending = max_pending
        self._rows: deque[Row] = deque()  # append/popleft are atomic: no lock between the loop and the thread
        self.dropped = 0
        self.shipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # RequestObserver ---------------------------------------------------------------------------------
    def finished(
        self, record: RequestRecord, request: InferRequest | None, response: InferResponse | None
    ) -> None:
        code = record.code
        if record.version and not 400 <= code < 500:  # what Accounting keeps: 4xx are the caller's
            self._rows.append((record.version, record.route, code, record.seconds, time.time()))

    # shipping ----------------------------------------------------------------------------------------
    def flush(self) -> int:
        """Ship what has accumulated (and the counters, even with no rows); returns the rows shipped."""
        rows = self._rows
        excess = len(rows) - self.max_pending
        for _ in range(max(excess, 0)):
            rows.popleft()
            self.dropped += 1
        batch = [rows.popleft() for _ in range(len(rows))]
        counters = self.counters() if self.counters is not None else (0, 0, 0)
        try:
            self._send(batch, counters, self.dropped)
        except Exception as err:
            self.dropped += len(batch)  # the hub is gone or stuck: these rows are lost, and counted
            if not self._failing:
                log.warning("shipping request stats failed (%d rows dropped): %s", len(batch), err)
            self._failing = True
            return 0
        self._failing = False
        self.shipped += len(batch)
        return len(batch)

    def start(self) -> StatsShipper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ferryman-stats", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and ship what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self.flush()


# -- Ray glue ----------------------------------------------------------------------------------------
def start_hub(model: str, *, namespace: str = NAMESPACE) -> Any:
    """Create the named hub actor (owned by this process: it goes when the launcher goes); returns its
    handle."""
    import ray

    actor: Any = ray.remote(StatsHub)
    # no CPU reserved: the local instance's CPUs are all given to the Serve replicas
    return actor.options(name=hub_name(model), namespace=namespace, num_cpus=0, max_restarts=0).remote(
        model=model
    )


def actor_sender(
    name: str, *, namespace: str = NAMESPACE, replica: str | None = None, timeout: float = SEND_TIMEOUT_S
) -> Send:
    """A :data:`Send` that ships to the named hub (looked up on first use, again after a failure)."""
    import ray

    replica_id = replica or uuid.uuid4().hex
    handle: list[Any] = []

    def send(rows: list[Row], counters: Counters, dropped: int) -> None:
        if not handle:
            handle.append(ray.get_actor(name, namespace=namespace))
        try:
            # a future, not ray.get: this runs beside an async replica's loop, where ray.get would warn
            handle[0].record.remote(replica_id, rows, counters, dropped).future().result(timeout=timeout)
        except Exception:
            handle.clear()
            raise

    return send
