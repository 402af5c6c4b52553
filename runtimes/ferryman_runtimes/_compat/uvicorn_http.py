"""uvicorn's ``HttpToolsProtocol``, fenced (see :mod:`ferryman._compat`).

Every ferryman HTTP server runs a subclass of it, three deep: ``asgi/limits.py`` (header/target caps,
receive deadline) → ``asgi/coalesce.py`` (one write per response) → ``asgi/direct.py`` (predictions
answered from the protocol). They override its parser callbacks and use its per-connection state, which
uvicorn does not document; the checks below name every such method and attribute, so an upgrade that
moves one fails at import with this module's message instead of on the first request.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ferryman._compat import installed, require, require_assigned, require_names

DISTRIBUTION = "uvicorn"
AT_LEAST, BELOW = "0.30", "0.55"
USES = "HttpToolsProtocol's parser callbacks and per-connection state (ferryman_runtimes.asgi.limits/direct)"

# methods the subclasses override and call through super(), or call on themselves
METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "resume_writing",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "send_400_response",
    "handle_websocket_upgrade",
    "_should_upgrade",
    "_unsupported_upgrade_warning",
    "_unset_keepalive_if_required",
    "_start_asgi_task",
)
# per-connection state HttpToolsProtocol.__init__ sets and the subclasses read or replace
STATE = (
    "app",
    "loop",
    "logger",
    "parser",
    "root_path",
    "timeout_keep_alive",
    "server_state",
    "transport",
    "flow",
    "pipeline",
    "scope",
    "headers",
    "expect_100_continue",
    "cycle",
)
CYCLE_STATE = ("response_started", "response_complete")


def check(version: str) -> str:
    """``version`` if it is in the supported range, else ``UnsupportedVersion``."""
    return require(DISTRIBUTION, version, at_least=AT_LEAST, below=BELOW, uses=USES)


def check_internals(
    version: str, *, protocol: Any = HttpToolsProtocol, cycle: Any = RequestResponseCycle
) -> None:
    require_names(protocol, METHODS, distribution=DISTRIBUTION, version=version)
    require_assigned(protocol.__init__, STATE, distribution=DISTRIBUTION, version=version)
    require_assigned(cycle.__init__, CYCLE_STATE, distribution=DISTRIBUTION, version=version)


VERSION = check(installed(DISTRIBUTION))
check_internals(VERSION)

__all__ = ["VERSION", "HttpToolsProtocol", "RequestResponseCycle", "check", "check_internals"]
