"""A call's context for handlers written against ``grpc.aio``'s (``invocation_metadata``,
``time_remaining``), when the native transport serves them: the cluster gateway's proxy
(:mod:`ferryman_runtimes.gateway.grpc_proxy`), whose handlers await the version servers.

:class:`AsyncService` turns such handlers into what :class:`~ferryman_runtimes.grpc.connection.Connection`
calls: ``invoke`` starts the handler as a task (cancelled when the caller resets the stream, its deadline
passes or the connection goes), ``finish`` passes its bytes on, ``failure`` maps what it raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ferryman_runtimes.grpc.service import Metadata

AsyncHandler = Callable[[bytes, Any], Awaitable[bytes]]


class CallContext:
    """The part of ``grpc.aio.ServicerContext`` the proxy reads."""

    __slots__ = ("_deadline", "_loop", "_metadata")

    def __init__(self, metadata: Metadata, deadline: float | None, loop: asyncio.AbstractEventLoop) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._loop = loop

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The caller's metadata as grpc.aio gives it: text values as str, ``-bin`` values as bytes."""
        out: list[tuple[str, str | bytes]] = []
        for name, value in self._metadata:
            key = name.decode("latin-1")
            out.append((key, value if key.endswith("-bin") else value.decode("latin-1")))
        return tuple(out)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._loop.time()


class AsyncService:
    """Awaited handlers (``methods``) for the native transport; ``failure`` maps their errors to a status."""

    cancellable = True  # a dropped call cancels its handler's task

    def __init__(
        self,
        methods: dict[str, AsyncHandler],
        *,
        failure: Callable[[Exception], tuple[Any, str]],
    ) -> None:
        self.methods = methods
        self.failure = failure
        self.loop = asyncio.get_running_loop()

    def invoke(self, name: str, body: bytes, metadata: Metadata, *, deadline: float | None = None) -> Any:
        context = CallContext(metadata, deadline, self.loop)
        return asyncio.ensure_future(self.methods[name](body, context), loop=self.loop)

    @staticmethod
    def finish(result: bytes) -> bytes:
        return result
