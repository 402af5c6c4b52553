"""A bounded window of the most recent live rows (and their predictions): a numpy ring buffer.

Not thread-safe on its own: the monitor guards each window with a lock. ``push`` is a slice copy whatever
the window size (the request path writes the rows its rate gate lets through).
"""

from __future__ import annotations

import numpy as np


class RingWindow:
    def __init__(self, capacity: int, width: int, *, dtype: np.dtype | type = np.float32) -> None:
        if capacity < 1 or width < 1:
            raise ValueError("a window needs at least one row and one column")
        self.capacity = capacity
        self.width = width
        self.rows = np.zeros((capacity, width), dtype=dtype)
        self.predictions = np.full(capacity, np.nan, dtype=np.float64)
        self.pos = 0  # next slot to write
        self.size = 0  # rows held (<= capacity)
        self.total = 0  # rows ever pushed
        self.since_run = 0  # rows pushed since the last drift run

    def push(self, rows: np.ndarray, predictions: np.ndarray | None = None) -> None:
        """Append rows (n, width); keep the newest ``capacity``. ``predictions`` has n values or is None."""
        n = rows.shape[0]
        if n == 0:
            return
        self.total += n
        self.since_run += n
        if n >= self.capacity:
            self.rows[:] = rows[n - self.capacity :]
            if predictions is None:
                self.predictions[:] = np.nan
            else:
                self.predictions[:] = predictions[n - self.capacity :]
            self.pos, self.size = 0, self.capacity
            return
        end = self.pos + n
        if end <= self.capacity:
            self.rows[self.pos : end] = rows
            self.predictions[self.pos : end] = np.nan if predictions is None else predictions
        else:
            first = self.capacity - self.pos
            self.rows[self.pos :] = rows[:first]
            self.rows[: n - first] = rows[first:]
            if predictions is None:
                self.predictions[self.pos :] = np.nan
                self.predictions[: n - first] = np.nan
            else:
                self.predictions[self.pos :] = predictions[:first]
                self.predictions[: n - first] = predictions[first:]
        self.pos = end % self.capacity
        self.size = min(self.capacity, self.size + n)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the held rows and predictions, oldest first."""
        if self.size < self.capacity:
            return self.rows[: self.size].copy(), self.predictions[: self.size].copy()
        order = np.r_[self.pos : self.capacity, 0 : self.pos]
        return self.rows[order], self.predictions[order]
