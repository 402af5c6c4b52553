"""ferryman_runtimes.later.Later: callbacks run in the resolving call, once, in order; await works."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ferryman_runtimes.later import Later


def test_callbacks_run_inside_set_result_in_the_order_added() -> None:
    later: Later[int] = Later()
    seen: list[tuple[str, int]] = []
    later.add_done_callback(lambda d: seen.append(("a", d.result())))
    later.add_done_callback(lambda d: seen.append(("b", d.result())))
    assert seen == [] and not later.done()
    later.set_result(7)
    assert seen == [("a", 7), ("b", 7)]  # already run: no loop turn in between
    later.add_done_callback(lambda d: seen.append(("late", d.result())))  # added after: runs at once
    assert seen[-1] == ("late", 7)
    assert later.done() and not later.cancelled() and later.exception() is None


def test_an_exception_is_raised_by_result_and_reported_by_exception() -> None:
    later: Later[int] = Later()
    err = ValueError("bad row")
    later.set_exception(err)
    assert later.exception() is err
    with pytest.raises(ValueError, match="bad row"):
        later.result()


def test_result_before_it_is_set_and_setting_twice_are_errors() -> None:
    later: Later[int] = Later()
    with pytest.raises(asyncio.InvalidStateError):
        later.result()
    with pytest.raises(asyncio.InvalidStateError):
        later.exception()
    later.set_result(1)
    with pytest.raises(asyncio.InvalidStateError):
        later.set_result(2)
    with pytest.raises(asyncio.InvalidStateError):
        later.set_exception(RuntimeError())
    assert later.result() == 1


def test_a_failing_callback_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    later: Later[str] = Later()
    seen: list[str] = []

    def broken(_: Later[str]) -> None:
        raise RuntimeError("writer bug")

    later.add_done_callback(broken)
    later.add_done_callback(lambda d: seen.append(d.result()))
    with caplog.at_level(logging.ERROR, logger="ferryman.later"):
        later.set_result("answer")
    assert seen == ["answer"]
    assert "a Later callback failed" in caplog.text and "writer bug" in caplog.text


def test_await_returns_the_result_or_raises_and_a_cancelled_waiter_leaves_it_alone() -> None:
    async def main() -> None:
        ok: Later[int] = Later()
        asyncio.get_running_loop().call_soon(ok.set_result, 3)
        assert await ok == 3
        assert await ok == 3  # a resolved Later awaits without suspending

        bad: Later[int] = Later()
        asyncio.get_running_loop().call_soon(bad.set_exception, KeyError("k"))
        with pytest.raises(KeyError):
            await bad

        shared: Later[int] = Later()
        waiter = asyncio.ensure_future(_await(shared))
        await asyncio.sleep(0)
        waiter.cancel()  # one waiter gives up (a client that went away) ...
        with pytest.raises(asyncio.CancelledError):
            await waiter
        shared.set_result(5)  # ... the result is still delivered, to whoever else waits
        assert shared.result() == 5 and await shared == 5

    asyncio.run(main())


async def _await(later: Later[int]) -> int:
    return await later
