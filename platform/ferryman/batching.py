"""Adaptive batching, the pure part: which requests may share one model run, merging their feeds, splitting
the outputs back, and the queue that decides when a batch runs. No event loop, no threads, no clock of its
own (the caller passes ``now``): the runtimes' adapters (``ferryman_runtimes.native.batcher``) drive it.

The policy (docs/batching.md):

* requests are merged only when every input has the same name, datatype and non-batch dimensions and they
  ask for the same outputs (:func:`batch_key`); a request with a 0-d input, or whose inputs disagree on
  their row count, runs alone;
* a batch is the queue's oldest request plus the later ones with its key, in arrival order, up to
  ``max_batch_size`` rows (a request larger than that runs alone, whole);
* adaptive, not fixed waiting: a request that arrives while the runner is idle and nothing is queued is
  ready at once; a request queued behind a run may wait up to ``max_delay`` after its arrival for company
  once the runner is free (a full batch never waits);
* the queue is bounded (``max_queue`` requests): beyond it, :meth:`BatchQueue.offer` refuses.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from ferryman.spec import Batching

T = TypeVar("T")

Feed = Mapping[str, np.ndarray]


class SplitError(ValueError):
    """The merged run's outputs cannot be split back by rows (an output without a per-row axis)."""


def rows_of(feed: Feed) -> int:
    """The request's rows: the leading dimension its inputs share (1 for a 0-d input)."""
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def batch_key(feed: Feed, outputs: Sequence[str]) -> Hashable | None:
    """What two requests must share to run together: input names, datatypes and non-batch dimensions, and
    the outputs asked for. None: this request runs alone (a 0-d input, or inputs with different row
    counts)."""
    rows = None
    parts = []
    for name in sorted(feed):
        a = feed[name]
        if a.ndim == 0:
            return None
        if rows is None:
            rows = a.shape[0]
        elif a.shape[0] != rows:
            return None
        parts.append((name, a.dtype.str, a.shape[1:]))
    return tuple(parts), tuple(outputs)


def merge(feeds: Sequence[Feed]) -> tuple[dict[str, np.ndarray], list[int]]:
    """One feed of every request's rows, in order (inputs concatenated along the batch axis), and each
    request's row count. The feeds must share a :func:`batch_key`."""
    if not feeds:
        raise ValueError("nothing to merge")
    counts = [rows_of(f) for f in feeds]
    if len(feeds) == 1:
        return dict(feeds[0]), counts
    return {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}, counts


def split(outputs: Sequence[np.ndarray], counts: Sequence[int]) -> list[list[np.ndarray]]:
    """Each request's share of the merged run's outputs (in output order), by the row ``counts``."""
    total = sum(counts)
    for a in outputs:
        if a.ndim == 0 or a.shape[0] != total:
            raise SplitError(f"an output of shape {list(a.shape)} has no per-row axis of {total} rows")
    if len(counts) == 1:
        return [list(outputs)]
    out = []
    start = 0
    for n in counts:  # views (no copy), as np.split gives, with a fraction of its per-piece cost
        end = start + n
        out.append([a[start:end] for a in outputs])
        start = end
    return out


def default_threads(cores: int | None = None) -> int:
    """Intra-op threads for a batched version's session: one per core but one (the event loop's), at least 1.
    Measured on 2 cores (docs/batching.md): 1 thread beats 2, which contend with the loop's core."""
    n = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, n - 1)


def session_threads(spec_threads: int, batching: Batching | None) -> int:
    """The intra-op threads of a version's session: the batching's own, else (batching on) the default for
    this machine, else ``spec.threads``."""
    if batching is None:
        return spec_threads
    return batching.threads if batching.threads is not None else default_threads()


@dataclass(slots=True)
class Pending(Generic[T]):
    item: T
    key: Hashable | None
    rows: int
    arrived: float
    ready_at: float  # when it may run without a full batch


@dataclass
class BatchQueue(Generic[T]):
    """The queue of one model version. The caller says when the runner is busy (:meth:`started` /
    :meth:`finished`) and asks :meth:`take` for the next batch whenever the runner is free."""

    max_batch_size: int
    max_delay: float  # seconds
    max_queue: int
    _queue: deque[Pending[T]] = field(default_factory=deque)
    running: bool = False

    @classmethod
    def from_spec(cls, batching: Batching) -> BatchQueue[T]:
        return cls(
            max_batch_size=batching.max_batch_size,
            max_delay=batching.max_delay_ms / 1000.0,
            max_queue=batching.max_queue_size,
        )

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, item: T, *, key: Hashable | None, rows: int, now: float) -> bool:
        """Queue ``item``; False (nothing queued) when the queue is full."""
        if len(self._queue) >= self.max_queue:
            return False
        idle = not self.running and not self._queue
        self._queue.append(Pending(item, key, rows, now, now if idle else now + self.max_delay))
        return True

    def take(self, now: float) -> list[Pending[T]] | float | None:
        """For a free runner: the batch to run now (oldest first), else the time to ask again (the oldest
        request's ``ready_at``), else None (nothing queued)."""
        queue = self._queue
        if not queue:
            return None
        head = queue[0]
        if head.key is None or head.rows >= self.max_batch_size:
            queue.popleft()
            return [head]
        group = [head]
        rows = head.rows
        limit = self.max_batch_size
        for p in list(queue)[1:]:
            if p.key == head.key and rows + p.rows <= limit:
                group.append(p)
                rows += p.rows
                if rows == limit:
                    break
        if rows < limit and now < head.ready_at:
            return head.ready_at
        if len(group) == len(queue):
            queue.clear()
        else:
            chosen = {id(p) for p in group}
            self._queue = deque(p for p in queue if id(p) not in chosen)
        return group

    def drain(self) -> list[Pending[T]]:
        """Everything queued (at shutdown), oldest first."""
        items = list(self._queue)
        self._queue.clear()
        return items
