"""``wait_for``: poll a condition until it holds (cluster tests wait for controllers, pods, leases)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(fn: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.25, what: str = "condition") -> Any:
    """Call ``fn`` until it returns something truthy and return that; an exception counts as "not yet".
    After ``timeout`` seconds, fail with ``what`` and the last value or exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as err:  # keep polling through transient errors, report the last one
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
