"""What the gateway answered, by request id, for A/B feedback: (version, route, the class output).

The gateway names each request it routes (unless the caller did) with a per-process prefix and a counter,
so the log keeps its own answers in fixed rings indexed by that counter: recording one is two list stores,
with no hashing, no allocation beyond the entry and no growing table the caches would have to hold (a
100,000-entry dict insert per request cost more than the routing decision). Ids the callers chose go into
a bounded ordered dict instead. Both keep the newest ``capacity`` entries.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

Entry = tuple[str, str, "np.ndarray | None"]  # version, route, the 1-element class output (or None)


class PredictionLog:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.prefix = os.urandom(6).hex()  # unique per process start; then a hexadecimal counter
        self._last = 0
        self._seqs = [0] * capacity
        self._entries: list[Entry | None] = [None] * capacity
        self._named: OrderedDict[str, Entry] = OrderedDict()

    def new_id(self) -> tuple[int, str]:
        """A fresh (sequence number, request id) for a request the caller did not name."""
        self._last += 1
        return self._last, f"{self.prefix}{self._last:x}"

    def record(self, seq: int, request_id: str, entry: Entry) -> None:
        """Remember an answer; ``seq`` is the number from :meth:`new_id`, or 0 for a caller-chosen id."""
        if seq:
            i = seq % self.capacity
            self._seqs[i] = seq
            self._entries[i] = entry
            return
        named = self._named
        named[request_id] = entry
        if len(named) > self.capacity:
            named.popitem(last=False)

    def get(self, request_id: str) -> Entry | None:
        i, seq = self._slot(request_id)
        if seq:
            return self._entries[i] if self._seqs[i] == seq else None
        return self._named.get(request_id)

    def forget(self, request_id: str) -> None:
        i, seq = self._slot(request_id)
        if seq:
            if self._seqs[i] == seq:
                self._seqs[i], self._entries[i] = 0, None
            return
        self._named.pop(request_id, None)

    def __len__(self) -> int:
        return sum(1 for s in self._seqs if s) + len(self._named)

    def _slot(self, request_id: str) -> tuple[int, int]:
        """(ring index, sequence number) of one of our own ids; (0, 0) for any other string."""
        prefix = self.prefix
        if len(request_id) <= len(prefix) or not request_id.startswith(prefix):
            return 0, 0
        try:
            seq = int(request_id[len(prefix) :], 16)
        except ValueError:
            return 0, 0
        if seq <= 0 or seq > self._last or seq <= self._last - self.capacity:
            return 0, 0
        return seq % self.capacity, seq
