"""Free loopback ports for test servers (so parallel test runs never collide).

``free_port`` and ``free_port_below_ephemeral`` are :mod:`ferryman.processes`' (shared with the demo, the
launchers and the load tests); ``bound_socket`` is for in-process servers, which can have no race at all.
"""

from __future__ import annotations

import socket

from ferryman.processes import free_port, free_port_below_ephemeral

__all__ = ["bound_socket", "free_port", "free_port_below_ephemeral"]


def bound_socket() -> socket.socket:
    """A listening-ready socket bound to an ephemeral loopback port (hand it to uvicorn)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s
