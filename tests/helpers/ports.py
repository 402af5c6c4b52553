"""Free loopback ports for test servers (so parallel test runs never collide)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it, release it).

    Use it for subprocess servers that need a ``--port``; for in-process servers prefer
    :func:`bound_socket`, which has no race at all.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bound_socket() -> socket.socket:
    """A listening-ready socket bound to an ephemeral loopback port (hand it to uvicorn)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def quiet_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports that are free now and lie below the ephemeral range,
    for a server that binds long after its port was chosen (a local Ray instance; see ``quiet_port``)."""
    from ferryman_runtimes.ray.launcher import quiet_port

    return quiet_port("127.0.0.1", count=count)
