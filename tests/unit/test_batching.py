"""Adaptive batching, the pure part (``ferryman.batching``): merge/split as properties, the queue's policy,
and the runtime's merged run (``ferryman_runtimes.native.batcher.run_jobs``) on real ONNX Runtime sessions."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from ferryman.batching import (
    BatchQueue,
    SplitError,
    batch_key,
    default_threads,
    merge,
    rows_of,
    session_threads,
    split,
)
from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError, InferenceFailed, Overloaded
from ferryman.spec import Batching
from ferryman_runtimes.later import Later
from ferryman_runtimes.native.batcher import (
    ENV_SWITCH_INTERVAL,
    Job,
    VersionBatcher,
    run_jobs,
    tune_switch_interval,
)

PROPS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = (np.float32, np.float64, np.int64, np.int32, np.bool_)


# -- merge / split ----------------------------------------------------------------------------------
@st.composite
def compatible_feeds(draw: st.DrawFn) -> list[dict[str, np.ndarray]]:
    """Several requests' feeds that share input names, dtypes and non-batch dims, with 0..6 rows each."""
    names = draw(st.lists(st.sampled_from(["a", "b", "input", "x"]), min_size=1, max_size=3, unique=True))
    spec = {
        n: (draw(st.sampled_from(DTYPES)), tuple(draw(st.lists(st.integers(1, 3), max_size=2))))
        for n in names
    }
    counts = draw(st.lists(st.integers(0, 6), min_size=1, max_size=8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    feeds: list[dict[str, np.ndarray]] = []
    for rows in counts:
        feeds.append(
            {n: (rng.standard_normal((rows, *dims)) * 100).astype(dt) for n, (dt, dims) in spec.items()}
        )
    return feeds


@PROPS
@given(compatible_feeds())
def test_split_of_a_merge_gives_each_request_exactly_its_own_rows(feeds: list[dict[str, np.ndarray]]) -> None:
    assert len({batch_key(f, ["y"]) for f in feeds}) == 1
    merged, counts = merge(feeds)
    assert counts == [rows_of(f) for f in feeds]
    names = list(feeds[0])
    pieces = split([merged[n] for n in names], counts)
    assert len(pieces) == len(feeds)
    for feed, piece in zip(feeds, pieces, strict=True):
        for n, got in zip(names, piece, strict=True):
            assert got.dtype == feed[n].dtype and got.shape == feed[n].shape
            assert np.array_equal(got, feed[n])


@PROPS
@given(st.lists(st.integers(0, 5), min_size=1, max_size=8), st.integers(1, 4))
def test_split_follows_row_counts_in_order(counts: list[int], width: int) -> None:
    total = sum(counts)
    out = np.arange(total * width).reshape(total, width)
    pieces = split([out, out[:, 0]], counts)
    start = 0
    for count, (two_d, one_d) in zip(counts, pieces, strict=True):
        assert np.array_equal(two_d, out[start : start + count])
        assert np.array_equal(one_d, out[start : start + count, 0])
        start += count


def test_split_refuses_outputs_without_a_per_row_axis() -> None:
    with pytest.raises(SplitError):
        split([np.float32(1.0) * np.ones(())], [1, 2])
    with pytest.raises(SplitError):
        split([np.ones((4, 2))], [1, 2])  # 4 rows for 3 requested


def test_batch_key_separates_what_must_never_be_merged() -> None:
    base = {"x": np.zeros((2, 3), np.float32)}
    key = batch_key(base, ["y"])
    assert key == batch_key({"x": np.ones((5, 3), np.float32)}, ["y"])  # rows may differ
    assert key != batch_key({"x": np.zeros((2, 4), np.float32)}, ["y"])  # a non-batch dimension
    assert key != batch_key({"x": np.zeros((2, 3), np.float64)}, ["y"])  # a datatype
    assert key != batch_key({"x2": np.zeros((2, 3), np.float32)}, ["y"])  # an input name
    assert key != batch_key(base, ["y", "z"])  # the outputs asked for
    assert batch_key({"x": np.zeros((), np.float32)}, ["y"]) is None  # no batch axis: runs alone
    assert batch_key({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, ["y"]) is None  # rows disagree


# -- the queue --------------------------------------------------------------------------------------
def _queue(max_batch_size: int = 4, max_delay: float = 0.002, max_queue: int = 100) -> BatchQueue[str]:
    return BatchQueue(max_batch_size=max_batch_size, max_delay=max_delay, max_queue=max_queue)


def test_a_request_on_an_idle_runner_runs_at_once() -> None:
    q = _queue()
    assert q.offer("a", key="k", rows=1, now=10.0)
    got = q.take(10.0)
    assert isinstance(got, list) and [p.item for p in got] == ["a"]
    assert q.take(10.0) is None


def test_requests_queued_behind_a_run_wait_for_company_at_most_the_delay() -> None:
    q = _queue(max_batch_size=4, max_delay=0.002)
    q.running = True
    q.offer("a", key="k", rows=1, now=10.0)
    q.offer("b", key="k", rows=1, now=10.0005)
    q.running = False
    assert q.take(10.001) == pytest.approx(10.002)  # the oldest may wait until its arrival + delay
    got = q.take(10.002)
    assert isinstance(got, list) and [p.item for p in got] == ["a", "b"]


def test_a_full_batch_never_waits_and_takes_rows_up_to_the_limit_in_arrival_order() -> None:
    q = _queue(max_batch_size=4, max_delay=1.0)
    q.running = True
    for i, rows in enumerate([2, 1, 3, 1, 1]):
        q.offer(f"r{i}", key="k", rows=rows, now=10.0)
    q.running = False
    got = q.take(10.0)
    assert isinstance(got, list)
    assert [p.item for p in got] == ["r0", "r1", "r3"]  # 2 + 1 + 1 = 4 rows; r2 (3 rows) would overflow
    assert sum(p.rows for p in got) == 4
    rest = q.take(11.0)
    assert isinstance(rest, list) and [p.item for p in rest] == ["r2", "r4"]


def test_a_request_larger_than_the_limit_runs_alone_and_whole() -> None:
    q = _queue(max_batch_size=4)
    q.running = True
    q.offer("big", key="k", rows=9, now=1.0)
    q.offer("small", key="k", rows=1, now=1.0)
    q.running = False
    got = q.take(1.0)
    assert isinstance(got, list) and [p.item for p in got] == ["big"]


def test_different_keys_are_never_merged_and_keep_their_order() -> None:
    q = _queue(max_batch_size=8, max_delay=0.0)
    q.running = True
    for i, key in enumerate(["a", "b", "a", "b", None, "a"]):
        q.offer(f"r{i}", key=key, rows=1, now=1.0)
    q.running = False
    batches = []
    while (got := q.take(2.0)) is not None:
        assert isinstance(got, list)
        batches.append([p.item for p in got])
    assert batches == [["r0", "r2", "r5"], ["r1", "r3"], ["r4"]]


def test_a_full_queue_refuses() -> None:
    q = _queue(max_queue=2)
    assert q.offer("a", key="k", rows=1, now=0.0)
    assert q.offer("b", key="k", rows=1, now=0.0)
    assert not q.offer("c", key="k", rows=1, now=0.0)
    assert len(q) == 2


@PROPS
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(1, 6), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 8),
)
def test_every_request_runs_once_with_its_own_kind_within_the_limit(
    offers: list[tuple[str | None, int, bool]], limit: int
) -> None:
    q: BatchQueue[int] = BatchQueue(max_batch_size=limit, max_delay=0.001, max_queue=1000)
    now = 0.0
    seen: list[int] = []
    for i, (key, rows, busy) in enumerate(offers):
        q.running = busy
        now += 0.0004
        assert q.offer(i, key=key, rows=rows, now=now)
        if not busy:
            got = q.take(now)
            if isinstance(got, list):
                seen.extend(_checked(got, offers, limit))
    q.running = False
    while (got := q.take(now)) is not None:
        if isinstance(got, float):
            assert got > now
            now = got
            continue
        seen.extend(_checked(got, offers, limit))
    assert sorted(seen) == list(range(len(offers)))


def _checked(batch: list, offers: list[tuple[str | None, int, bool]], limit: int) -> list[int]:
    items = [p.item for p in batch]
    assert items == sorted(items)  # arrival order
    keys = {offers[i][0] for i in items}
    assert len(keys) == 1 and (None not in keys or len(items) == 1)
    assert len(items) == 1 or sum(offers[i][1] for i in items) <= limit
    return items


def test_threads_default_leaves_the_event_loop_a_core() -> None:
    assert default_threads(1) == 1 and default_threads(2) == 1 and default_threads(8) == 7
    assert session_threads(3, None) == 3
    assert session_threads(3, Batching(threads=2)) == 2
    assert session_threads(3, Batching()) == default_threads()


# -- merged runs on real ONNX Runtime ---------------------------------------------------------------
def _save(graph, path: Path) -> Path:  # type: ignore[no-untyped-def]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _lookup_model(path: Path) -> OnnxModel:
    """``out = table[idx]``: an index out of the table's 8 rows makes the run fail (a bad request)."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [8, 2], [float(i) for i in range(16)])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["out"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        initializer=[table],
    )
    return OnnxModel.load(_save(graph, path), name="lookup", version="v1")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    from ferryman.examples_compute import cnn_onnx

    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    path.write_bytes(cnn_onnx(seed=3, channels=(8, 16, 16), hidden=32))
    return OnnxModel.load(path, name="cnn", version="v1")


def _job(feed: dict[str, np.ndarray], names: list[str]) -> Job:
    """A job as the batcher queues it, for run_jobs alone (never delivered: no loop)."""
    return Job(feed, names, Later(), None)  # type: ignore[arg-type]


def test_merged_answers_equal_each_request_run_alone_bit_for_bit(cnn: OnnxModel) -> None:
    rng = np.random.default_rng(0)
    jobs = [
        _job({"input": (rng.random((rows, 64)) * 16).astype(np.float32)}, cnn.output_names)
        for rows in (1, 3, 1, 5, 2)
    ]
    merged = run_jobs(cnn, jobs)
    for job, got in zip(jobs, merged, strict=True):
        assert not isinstance(got, FerrymanError)
        alone = cnn.execute(job.feed, job.names)
        for a, b in zip(got, alone, strict=True):
            assert a.shape[0] == rows_of(job.feed)
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_a_request_the_model_rejects_fails_alone(tmp_path: Path) -> None:
    model = _lookup_model(tmp_path / "lookup.onnx")
    jobs = [_job({"idx": np.array(idx, np.int64)}, ["out"]) for idx in ([1, 2], [99], [7], [0, 0, 3])]
    results = run_jobs(model, jobs)
    assert isinstance(results[1], FerrymanError)
    for i, want in ((0, [1, 2]), (2, [7]), (3, [0, 0, 3])):
        got = results[i]
        assert not isinstance(got, FerrymanError)
        assert np.array_equal(got[0], np.arange(16, dtype=np.float32).reshape(8, 2)[want])


def _submitted_in_one_turn(
    batcher: VersionBatcher, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> list[tuple[list[np.ndarray], float]]:
    """Every feed submitted in one loop turn, each request's outcome once all are answered; then closed."""

    async def main() -> list[tuple[list[np.ndarray], float]]:
        return list(await asyncio.gather(*[batcher.submit(f, names) for f in feeds]))

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_requests_submitted_in_one_loop_turn_share_one_run_and_get_their_own_rows(cnn: OnnxModel) -> None:
    rng = np.random.default_rng(1)
    feeds = [{"input": (rng.random((rows, 64)) * 16).astype(np.float32)} for rows in (1, 2, 1, 4)]
    sizes: list[tuple[int, int]] = []
    batcher = VersionBatcher(
        cnn, Batching(max_batch_size=32), observe=lambda n, rows, delays: sizes.append((n, rows))
    )

    outcomes = _submitted_in_one_turn(batcher, feeds, cnn.output_names)
    assert sizes == [(4, 8)] and batcher.runs == 1
    for feed, (arrays, seconds) in zip(feeds, outcomes, strict=True):
        assert seconds > 0
        for got, alone in zip(arrays, cnn.execute(feed, cnn.output_names), strict=True):
            assert np.array_equal(got, alone)


class _TurnProbe(VersionBatcher):
    """Records the event-loop turn in which each run's results are handed back to the loop."""

    def __init__(self, model: OnnxModel, batching: Batching, turns: list[int]) -> None:
        super().__init__(model, batching)
        self.turns = turns
        self.handed_back_in: list[int] = []

    def _done(self, *args: Any) -> None:
        self.handed_back_in.append(self.turns[0])
        super()._done(*args)


def test_each_request_is_answered_in_the_turn_its_batch_is_handed_back(cnn: OnnxModel) -> None:
    """No loop turn between the end of a run and its requests' callbacks (the response writers): an
    asyncio future would call them a turn later, after the turn's deferred observers (docs/batching.md)."""
    turns = [0]
    feed = {"input": np.ones((1, 64), np.float32)}
    batcher = _TurnProbe(cnn, Batching(max_batch_size=4, max_delay_ms=0), turns)
    answered_in: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:  # counts loop turns while the requests are out
            turns[0] += 1
            if len(answered_in) < 3:
                loop.call_soon(tick)

        loop.call_soon(tick)
        lates = [batcher.submit(feed, cnn.output_names) for _ in range(3)]
        for later in lates:
            later.add_done_callback(lambda _: answered_in.append(turns[0]))
        for later in lates:
            await later

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert len(answered_in) == 3 and batcher.handed_back_in
    assert set(answered_in) <= set(batcher.handed_back_in)


def test_bursts_against_a_short_delay_answer_every_request_with_its_own_rows(cnn: OnnxModel) -> None:
    """Many bursts with ``maxDelayMs: 1``: the worker sleeps with and without a timeout, and is woken as its
    timed wait runs out (the race _sleep resolves); every request is answered once, with its own rows."""
    rng = np.random.default_rng(4)
    batcher = VersionBatcher(cnn, Batching(max_batch_size=8, max_delay_ms=1))
    answered = 0

    async def main() -> None:
        nonlocal answered
        for burst in range(60):
            feeds = [
                {"input": (rng.random((1 + i % 3, 64)) * 16).astype(np.float32)}
                for i in range(int(rng.integers(1, 12)))
            ]
            lates = [batcher.submit(f, cnn.output_names) for f in feeds]
            if burst % 3 == 0:
                await asyncio.sleep(0.0015)  # longer than the delay: the worker's timed wait runs out
            for feed, later in zip(feeds, lates, strict=True):
                arrays, _ = await later
                assert np.array_equal(arrays[0], cnn.execute(feed, cnn.output_names)[0])
                answered += 1

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert batcher.requests == answered and batcher.runs <= answered


def test_close_wakes_a_worker_that_sleeps_and_it_exits(cnn: OnnxModel) -> None:
    batcher = VersionBatcher(cnn, Batching())
    feed = {"input": np.zeros((1, 64), np.float32)}

    async def main() -> None:
        await batcher.submit(feed, cnn.output_names)  # starts the worker; it then sleeps, idle

    asyncio.run(main())
    worker = batcher._thread
    assert worker is not None and worker.is_alive()
    batcher.close()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_a_full_batch_queue_is_overloaded(cnn: OnnxModel) -> None:
    batcher = VersionBatcher(cnn, Batching(max_queue_size=2))
    feed = {"input": np.zeros((1, 64), np.float32)}

    async def main() -> None:
        futures = [batcher.submit(feed, cnn.output_names) for _ in range(2)]
        with pytest.raises(Overloaded):
            batcher.submit(feed, cnn.output_names)
        await asyncio.gather(*futures)

    try:
        asyncio.run(main())
    finally:
        batcher.close()


def test_the_worker_takes_full_batches_back_to_back_without_the_loop(cnn: OnnxModel) -> None:
    """Six 1-row requests queued in one loop turn with maxBatchSize 2: the worker runs three batches of two in
    arrival order, taking each next batch itself when a run ends; every request gets its own rows."""
    rng = np.random.default_rng(2)
    feeds = [{"input": (rng.random((1, 64)) * 16).astype(np.float32)} for _ in range(6)]
    sizes: list[tuple[int, int]] = []
    batcher = VersionBatcher(
        cnn, Batching(max_batch_size=2, max_delay_ms=1000), observe=lambda n, rows, d: sizes.append((n, rows))
    )

    outcomes = _submitted_in_one_turn(batcher, feeds, cnn.output_names)
    assert sizes == [(2, 2)] * 3 and batcher.runs == 3 and batcher.requests == 6
    for feed, (arrays, _) in zip(feeds, outcomes, strict=True):
        for got, alone in zip(arrays, cnn.execute(feed, cnn.output_names), strict=True):
            assert np.array_equal(got, alone)


def test_a_closed_batcher_answers_queued_requests_and_refuses_new_ones(cnn: OnnxModel) -> None:
    batcher = VersionBatcher(cnn, Batching())
    feed = {"input": np.zeros((1, 64), np.float32)}

    async def main() -> None:
        queued = batcher.submit(feed, cnn.output_names)
        batcher.close()  # before the end of the loop turn: the request was never taken
        with pytest.raises(InferenceFailed, match="shutting down"):
            await queued
        with pytest.raises(InferenceFailed, match="shutting down"):
            batcher.submit(feed, cnn.output_names)

    asyncio.run(main())


@pytest.mark.parametrize(("value", "want"), [("0.2", 0.0002), ("", 0.0005), ("fast", 0.0005), ("0", 0.0005)])
def test_batching_sets_the_switch_interval(monkeypatch: pytest.MonkeyPatch, value: str, want: float) -> None:
    before = sys.getswitchinterval()
    monkeypatch.setenv(ENV_SWITCH_INTERVAL, value)
    try:
        assert tune_switch_interval() == pytest.approx(want)
        assert sys.getswitchinterval() == pytest.approx(want)
    finally:
        sys.setswitchinterval(before)
