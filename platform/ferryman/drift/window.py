"""A bounded window of the most recent live rows (and their predictions): a numpy ring buffer.

Not thread-safe on its own: the monitor guards each window with a lock. Nothing here runs on the request
path: the monitor folds pending requests in bulk with ``push_many`` (one concatenation per batch, only of
the rows that fit); ``push`` is a slice copy, whatever the window size.
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
            self.rows[:] = rows[n - self.capacity:]
            if predictions is None:
                self.predictions[:] = np.nan
            else:
                self.predictions[:] = predictions[n - self.capacity:]
            self.pos, self.size = 0, self.capacity
            return
        end = self.pos + n
        if end <= self.capacity:
            self.rows[self.pos:end] = rows
            self.predictions[self.pos:end] = np.nan if predictions is None else predictions
        else:
            first = self.capacity - self.pos
            self.rows[self.pos:] = rows[:first]
            self.rows[: n - first] = rows[first:]
            if predictions is None:
                self.predictions[self.pos:] = np.nan
                self.predictions[: n - first] = np.nan
            else:
                self.predictions[self.pos:] = predictions[:first]
                self.predictions[: n - first] = predictions[first:]
        self.pos = end % self.capacity
        self.size = min(self.capacity, self.size + n)

    def push_many(self, chunks: list[tuple[np.ndarray, np.ndarray | None]], *, skipped: int = 0) -> None:
        """Append many (rows, predictions-or-None) chunks, oldest first, with one copy: only the newest
        ``capacity`` rows are concatenated; older ones (and ``skipped`` rows before them) are just counted."""
        kept: list[tuple[np.ndarray, np.ndarray | None]] = []
        held = 0
        for chunk in reversed(chunks):
            if held >= self.capacity:
                skipped += chunk[0].shape[0]
            else:
                kept.append(chunk)
                held += chunk[0].shape[0]
        if not kept:
            self.total += skipped
            self.since_run += skipped
            return
        kept.reverse()
        rows = np.concatenate([r for r, _ in kept]) if len(kept) > 1 else kept[0][0]
        preds = None
        if any(p is not None for _, p in kept):
            preds = np.concatenate([np.full(r.shape[0], np.nan) if p is None else p for r, p in kept])
        self.total += skipped
        self.since_run += skipped
        self.push(rows, preds)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the held rows and predictions, oldest first."""
        if self.size < self.capacity:
            return self.rows[: self.size].copy(), self.predictions[: self.size].copy()
        order = np.r_[self.pos:self.capacity, 0:self.pos]
        return self.rows[order], self.predictions[order]
