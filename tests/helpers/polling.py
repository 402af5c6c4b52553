"""``wait_for``: poll a condition until it holds (cluster tests wait for controllers, pods, leases)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    fn: Callable[[], Any],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Call ``fn`` until it returns something truthy and return that; an exception counts as "not yet".
    After ``timeout`` seconds, fail with ``what``, the last value or exception and ``on_timeout()`` if given
    (e.g. diagnostics of the cluster)."""
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
            extra = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{extra}")
        time.sleep(interval)
