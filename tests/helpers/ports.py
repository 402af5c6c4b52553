"""Free loopback ports for test servers (so parallel test runs never collide)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


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


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections and bind-to-0 draw from it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def quiet_ports(count: int = 1, *, lowest: int = 20_000) -> int:
    """The first of ``count`` consecutive loopback ports that are free now and lie below the ephemeral range.

    For a server that binds its port long after it was chosen: a local Ray instance takes about 20 s to
    bind its direct-ingress port, while its own processes open hundreds of connections, and a port that
    :func:`free_port` drew from the ephemeral range can be taken by one of them meanwhile (Ray then blocks
    the port and the deployment fails). No connection is ever given a port below the range.
    """
    high = _ephemeral_low() - count
    rng = random.Random()
    for _ in range(500):
        first = rng.randrange(lowest, high) if high > lowest else free_port()
        if all(_is_free(p) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free loopback ports between {lowest} and {high + count}")
