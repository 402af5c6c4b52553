"""A result that arrives later on the event loop, delivered the moment it arrives.

:class:`Later` stands where an :class:`asyncio.Future` would, for a batched version's answer: the batcher
resolves it on the loop when the batch has run, and whoever waits for it (the HTTP protocol writing the
response, the gRPC connection) is called right there, in the resolving call. An asyncio future schedules
its callbacks for the next loop turn instead; on the batched path that is three turns between the end of a
run and the response being written (the batch's future, the request's answer, the write), and the turn's
deferred observers (metrics, accounting, drift sampling) run in the second, before the answer is written.
At one connection that hand-back was a third of batching's cost in latency (docs/batching.md).

It is resolved once, on the loop's thread, and never cancelled: a caller that stops waiting (a client that
went away, a cancelled ``await``) simply ignores the result. ``await later`` works too (through a private
asyncio future), for the ASGI path and for tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

log = logging.getLogger("ferryman.later")

T = TypeVar("T")


class Later(Generic[T]):
    """A one-shot result (or exception) whose callbacks run as it is set, in the setter's call."""

    __slots__ = ("_callbacks", "_exception", "_result", "_set")

    def __init__(self) -> None:
        self._set = False
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Later[T]], None]] = []

    # -- the asyncio.Future surface its users need ------------------------------------------------------
    def done(self) -> bool:
        return self._set

    def cancelled(self) -> bool:
        """Always False: a Later is never cancelled (its work is shared; see the module docstring)."""
        return False

    def result(self) -> T:
        """The result, or raises the exception it was set with; InvalidStateError before either."""
        if not self._set:
            raise asyncio.InvalidStateError("Later: result is not set yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        if not self._set:
            raise asyncio.InvalidStateError("Later: result is not set yet")
        return self._exception

    def add_done_callback(self, fn: Callable[[Later[T]], None]) -> None:
        """Call ``fn(self)`` when the result is set (now, if it already is)."""
        if self._set:
            _call(fn, self)
        else:
            self._callbacks.append(fn)

    def set_result(self, result: T) -> None:
        self._resolve(result, None)

    def set_exception(self, exception: BaseException) -> None:
        self._resolve(None, exception)

    def __await__(self) -> Generator[Any, None, T]:
        if not self._set:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: _wake(future))
            yield from future.__await__()
        return self.result()

    # -- internals -------------------------------------------------------------------------------------
    def _resolve(self, result: T | None, exception: BaseException | None) -> None:
        if self._set:
            raise asyncio.InvalidStateError("Later: result is already set")
        self._set, self._result, self._exception = True, result, exception
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _call(fn, self)

    def __repr__(self) -> str:
        state = "pending" if not self._set else "error" if self._exception is not None else "done"
        return f"<Later {state}>"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # an awaiter cancelled meanwhile has stopped waiting
        future.set_result(None)


def _call(fn: Callable[[Later[T]], None], later: Later[T]) -> None:
    """One callback; its failure is logged and does not keep the others from running."""
    try:
        fn(later)
    except Exception:
        log.exception("a Later callback failed")
