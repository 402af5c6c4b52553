"""ferryman.drift: the ring window, the monitor and its worker, Evidently engines, reference data,
observer."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ferryman.drift import DriftConfig, DriftMonitor, DriftObserver, load_reference, monitor_for_deployment
from ferryman.drift.engine import compute
from ferryman.drift.job import DriftJob
from ferryman.drift.report import DriftResult
from ferryman.drift.runners import InlineRunner, ProcessRunner
from ferryman.drift.window import RingWindow
from ferryman.errors import ModelStoreError
from ferryman.metrics import FerrymanMetrics
from ferryman.protocol.tensor import InferRequest, InferResponse, Tensor
from ferryman.telemetry import RequestRecord

FEATURES = 4


def gaussian(rows: int, seed: int, *, scale0: float = 1.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, FEATURES))
    x[:, 0] *= scale0
    return x


def thread_monitor(**config: Any) -> DriftMonitor:
    settings: dict[str, Any] = {
        "window_size": 200,
        "every_rows": 200,
        "threshold": 0.25,
        "isolation": "thread",
        "min_interval_seconds": 0.0,
        **config,
    }
    cfg = DriftConfig(**settings)
    monitor = DriftMonitor("m", config=cfg, metrics=FerrymanMetrics(CollectorRegistry()))
    monitor.add_version("v1", reference=gaussian(600, seed=1), feature_names=["a", "b", "c", "d"])
    return monitor


# -- window --------------------------------------------------------------------------------------------
def test_window_keeps_the_newest_rows_in_order() -> None:
    w = RingWindow(5, 2)
    w.push(np.arange(6).reshape(3, 2), np.array([0.0, 1.0, 2.0]))
    w.push(np.arange(6, 12).reshape(3, 2), None)
    rows, preds = w.snapshot()
    assert rows[:, 0].tolist() == [2, 4, 6, 8, 10]
    assert preds[:2].tolist() == [1.0, 2.0] and np.isnan(preds[2:]).all()
    assert (w.size, w.total, w.since_run) == (5, 6, 6)
    w.push(np.arange(100, 120).reshape(10, 2), np.arange(10.0))  # more than the capacity at once
    rows, preds = w.snapshot()
    assert rows[:, 0].tolist() == [110, 112, 114, 116, 118] and preds.tolist() == [5, 6, 7, 8, 9]


def test_window_snapshot_before_it_is_full() -> None:
    w = RingWindow(10, 1)
    w.push(np.array([[1.0], [2.0]]))
    rows, _ = w.snapshot()
    assert rows.ravel().tolist() == [1.0, 2.0]


# -- the monitor ----------------------------------------------------------------------------------------
def test_one_feature_scaled_3x_raises_the_drift_share_above_the_threshold_within_one_window() -> None:
    monitor = thread_monitor().start()
    try:
        assert monitor.drift_share("v1") is None  # no run yet: unknown, not "no drift"
        for chunk in np.split(gaussian(200, seed=2), 20):  # like 20 requests of 10 rows
            monitor.observe("v1", chunk)
        first = monitor.wait_for_run("v1", after=0, timeout=300)
        assert first is not None and first.error is None
        assert first.share is not None and first.share < 0.25 and first.drifted is False
        assert monitor.drift_share("v1") == first.share

        for chunk in np.split(gaussian(200, seed=3, scale0=3.0), 20):
            monitor.observe("v1", chunk)
        second = monitor.wait_for_run("v1", after=1, timeout=300)
        assert second is not None and second.error is None
        assert second.drifted is True and second.share is not None and second.share >= 0.25
        assert "a" in second.drifted_features
        by_name = {f.name: f for f in second.features}
        assert by_name["a"].method == "K-S p_value" and by_name["a"].score < by_name["a"].threshold
        assert second.window_rows == 200 and second.reference_rows == 600 and second.rows_seen == 400
        assert monitor.is_drifted("v1") is True
    finally:
        monitor.stop()


def test_drift_runs_publish_gauges() -> None:
    registry = CollectorRegistry()
    monitor = DriftMonitor(
        "m",
        config=DriftConfig(window_size=100, every_rows=100, threshold=0.25, isolation="thread"),
        metrics=FerrymanMetrics(registry),
    )
    monitor.add_version("v2", reference=gaussian(300, seed=1), feature_names=["a", "b", "c", "d"])
    monitor.observe("v2", gaussian(100, seed=5, scale0=3.0))
    report = monitor.run_now("v2")
    assert report.drifted
    get = registry.get_sample_value
    assert get("ferryman_drift_share", {"model": "m", "version": "v2"}) == pytest.approx(report.share)
    assert get("ferryman_drift_detected", {"model": "m", "version": "v2"}) == 1
    assert get("ferryman_drift_feature_drifted", {"model": "m", "version": "v2", "feature": "a"}) == 1
    assert get("ferryman_drift_window_rows", {"model": "m", "version": "v2"}) == 100
    assert get("ferryman_drift_share_threshold", {"model": "m"}) == 0.25
    assert get("ferryman_drift_run_duration_seconds_count", {"model": "m"}) == 1


class GatedRunner:
    """A real engine run that waits for the test to open a gate (to observe while a run is in progress)."""

    def __init__(self) -> None:
        self.inner = InlineRunner()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def run(self, job: DriftJob):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.gate.wait(300)
        return self.inner.run(job)

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self.gate.set()


def test_the_request_path_never_waits_for_a_drift_run() -> None:
    runner = GatedRunner()
    monitor = DriftMonitor(
        "m", config=DriftConfig(window_size=50, every_rows=50, isolation="thread"), runner=runner
    )
    monitor.add_version("v1", reference=gaussian(100, seed=1))
    monitor.start()
    try:
        monitor.observe("v1", gaussian(50, seed=2))
        assert runner.entered.wait(60)  # a run is in progress and blocked
        for i in range(2000):  # would hang if observe waited for the run
            monitor.observe("v1", gaussian(1, seed=i))
        assert monitor.rows_seen("v1") == 2050
        runner.gate.set()
        assert monitor.wait_for_run("v1", after=0, timeout=300) is not None
    finally:
        monitor.stop()


def test_sampling_and_malformed_rows() -> None:
    off = thread_monitor(sample_percent=0.0)
    off.observe("v1", gaussian(50, seed=2))
    assert off.report("v1").rows_seen == 0
    monitor = thread_monitor()
    monitor.observe("v1", np.ones((3, FEATURES + 1)))  # wrong width: ignored, never raises
    monitor.observe("v1", np.ones(FEATURES))  # 1-D: ignored
    monitor.observe("unknown-version", np.ones((3, FEATURES)))
    monitor.observe("v1", np.ones((3, FEATURES)), predictions=np.ones(2))  # misaligned predictions dropped
    assert monitor.report("v1").rows_seen == 3


def test_reports_are_json_safe() -> None:
    monitor = thread_monitor()
    monitor.observe("v1", gaussian(200, seed=9, scale0=3.0))
    doc = monitor.run_now("v1").to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert '"drifted_features"' in text and doc["version"] == "v1"


# -- engines ---------------------------------------------------------------------------------------------
def test_stattest_engine_matches_evidently_data_drift_preset() -> None:
    reference = gaussian(300, seed=11)
    current = gaussian(250, seed=12, scale0=3.0)
    current[:, 3] = np.round(current[:, 3])  # few distinct values: Evidently picks another test
    ref_pred = (reference[:, 1] > 0).astype(float)
    cur_pred = (current[:, 1] > 0.5).astype(float)
    common = dict(
        reference=reference,
        current=current,
        feature_names=["a", "b", "c", "d"],
        drift_share=0.5,
        reference_predictions=ref_pred,
        current_predictions=cur_pred,
        prediction_kind="class",
    )
    fast = compute(DriftJob(engine="stattest", **common))  # type: ignore[arg-type]
    preset = compute(DriftJob(engine="preset", **common))  # type: ignore[arg-type]
    assert [f.name for f in fast.features] == [f.name for f in preset.features] == ["a", "b", "c", "d"]
    for f, p in zip(fast.features, preset.features, strict=True):
        assert (f.method, f.drifted, f.threshold) == (p.method, p.drifted, p.threshold)
        assert f.score == pytest.approx(p.score, rel=1e-9, abs=1e-300)
    assert fast.share == pytest.approx(preset.share)
    assert fast.features[0].drifted and fast.share >= 0.25
    assert fast.prediction is not None and fast.prediction.kind == "class"
    assert fast.seconds > 0


def test_process_runner_computes_in_a_child_process() -> None:
    runner = ProcessRunner(engine="stattest")
    assert not runner.ready()  # no child yet
    try:
        runner.start()
        deadline = time.monotonic() + 300
        while not runner.ready():  # the child reports once Evidently is imported and warmed up
            assert time.monotonic() < deadline, "drift process never reported ready"
            time.sleep(0.1)
        job = DriftJob(
            engine="stattest",
            reference=gaussian(200, seed=1),
            current=gaussian(200, seed=2, scale0=3.0),
            feature_names=["a", "b", "c", "d"],
            drift_share=0.25,
        )
        result = runner.run(job)
        assert runner.pid is not None
        assert result.features[0].drifted and result.share >= 0.25
        again = runner.run(job)  # the same long-lived child answers the next job
        assert [f.score for f in again.features] == [f.score for f in result.features]
    finally:
        runner.close()
    assert runner.pid is None


def test_asking_whether_the_engine_is_ready_never_waits_for_a_run_in_progress() -> None:
    """``GET /drift`` asks on the event loop while the worker's run holds the runner (here: the child is
    stopped mid-import, as a drift process at idle priority on a busy machine is): the answer comes at once,
    not when the run ends (which stalled every request of the server)."""
    runner = ProcessRunner(engine="stattest")
    runner.start()
    assert runner.pid is not None
    child = runner.pid
    os.kill(child, signal.SIGSTOP)
    job = DriftJob(
        engine="stattest",
        reference=gaussian(200, seed=1),
        current=gaussian(200, seed=2),
        feature_names=["a", "b", "c", "d"],
        drift_share=0.25,
    )
    results: list[DriftResult] = []
    run = threading.Thread(target=lambda: results.append(runner.run(job)), daemon=True)
    try:
        run.start()
        deadline = time.monotonic() + 60
        while not runner._lock.locked():  # the run holds the runner, waiting for the stopped child
            assert time.monotonic() < deadline and run.is_alive(), "the run never started"
            time.sleep(0.01)
        answers: list[bool] = []
        ask = threading.Thread(target=lambda: answers.append(runner.ready()), daemon=True)
        ask.start()
        ask.join(timeout=60)  # generous: it must not depend on the stopped child at all
        assert answers, "ready() waited for the run in progress"
        assert run.is_alive()  # the run is still waiting: the answer did not come from its end
    finally:
        os.kill(child, signal.SIGCONT)
    try:
        run.join(timeout=600)
        assert results and results[0].share < 0.25
        assert runner.ready()
    finally:
        runner.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_the_drift_process_loads_its_engine_at_normal_priority_and_computes_at_idle_priority() -> None:
    """At idle priority the engine's import (seconds of CPU) only ran when nothing else on the machine
    wanted the CPU: under load it never finished. So: normal priority until ready, idle afterwards."""
    runner = ProcessRunner(engine="stattest")
    try:
        runner.start()
        assert runner.pid is not None
        deadline = time.monotonic() + 600
        while True:
            policy = os.sched_getscheduler(runner.pid)  # read before asking: idle then means ready was sent
            if runner.ready():
                break
            assert policy != os.SCHED_IDLE, "the drift process went idle before its engine was loaded"
            assert time.monotonic() < deadline, "drift process never reported ready"
            time.sleep(0.05)
        wait_for_idle = time.monotonic() + 60
        while os.sched_getscheduler(runner.pid) != os.SCHED_IDLE:  # set right after the ready message
            assert time.monotonic() < wait_for_idle, "the drift process never went idle"
            time.sleep(0.05)
    finally:
        runner.close()


# -- reference data and the deployment ------------------------------------------------------------------
def test_load_reference_npy_and_csv(tmp_path: Path) -> None:
    x = gaussian(20, seed=1)
    np.save(tmp_path / "ref.npy", x.astype(np.float32))
    data, names = load_reference(tmp_path / "ref.npy")
    assert data.shape == (20, FEATURES) and names is None
    (tmp_path / "ref.csv").write_text("a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in x))
    data, names = load_reference(tmp_path / "ref.csv")
    assert names == ["a", "b", "c", "d"] and np.allclose(data, x)
    (tmp_path / "plain.csv").write_text("\n".join(",".join(map(str, r)) for r in x))
    data, names = load_reference(tmp_path / "plain.csv")
    assert names is None and data.shape == (20, FEATURES)
    big, _ = load_reference(tmp_path / "ref.npy", max_rows=5)
    assert big.shape == (5, FEATURES)


@pytest.mark.parametrize("content", [b"not numpy", b""])
def test_load_reference_rejects_bad_files(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "ref.npy"
    bad.write_bytes(content)
    with pytest.raises(ModelStoreError, match="reference data"):
        load_reference(bad)
    with pytest.raises(ModelStoreError, match=r"\.npy or \.csv"):
        load_reference(tmp_path / "ref.parquet")


def test_monitor_for_the_sample_deployment(sample_spec: Path, traffic: np.ndarray) -> None:
    from ferryman.dataplane import repository_for
    from ferryman.spec import load_deployment

    md = load_deployment(sample_spec)
    repo = repository_for(md)
    config = DriftConfig.from_spec(md.spec.drift, isolation="thread", windows_per_second=float("inf"))
    monitor = monitor_for_deployment(md, repo, config=config)
    assert monitor is not None and monitor.versions == ["v1", "v2"]
    assert monitor.config.window_size == md.spec.drift.window_size

    observer = DriftObserver(monitor)
    model = repo.get(md.name, "v1")
    for row in traffic[:60]:
        x = row.reshape(1, -1)
        outputs = model.run({"input": x})
        request = InferRequest(inputs=[Tensor(name="input", datatype="FP32", shape=[1, 30], data=x)])
        response = InferResponse(
            model_name=md.name,
            model_version="v1",
            outputs=[Tensor(name=n, datatype="", shape=list(a.shape), data=a) for n, a in outputs.items()],
        )
        observer.finished(
            RequestRecord(
                model=md.name, version="v1", route="stable", protocol="v2", code=200, seconds=0.001
            ),
            request,
            response,
        )
    # failures and other models are not sampled
    observer.finished(
        RequestRecord(model=md.name, version="v1", route="stable", protocol="v2", code=500, seconds=0.001),
        request,
        None,
    )
    report = monitor.run_now("v1")
    assert report.window_rows == 60 and report.error is None
    assert len(report.features) == 30 and report.features[0].name == "input_0"
    assert report.prediction is not None and report.prediction.kind == "class"
    assert report.drifted is False  # held-out rows of the same data set


def test_drift_disabled_or_without_reference_data_gives_no_monitor(sample_spec: Path) -> None:
    from ferryman.dataplane import repository_for
    from ferryman.spec import load_deployment

    md = load_deployment(sample_spec)
    repo = repository_for(md)
    md.spec.drift.enabled = False
    assert monitor_for_deployment(md, repo) is None
    md.spec.drift.enabled = True
    for v in md.spec.versions:
        v.reference_data = None
    assert monitor_for_deployment(md, repo) is None


def test_the_specs_rate_gate_and_run_interval_reach_the_monitor(sample_spec: Path) -> None:
    from ferryman.dataplane import repository_for
    from ferryman.spec import load_deployment

    md = load_deployment(sample_spec)
    defaults = DriftConfig.from_spec(md.spec.drift)
    assert (defaults.windows_per_second, defaults.min_interval_seconds) == (2.0, 5.0)
    md.spec.drift.windows_per_second = 0.25
    md.spec.drift.min_interval_seconds = 60.0
    monitor = monitor_for_deployment(md, repository_for(md))
    assert monitor is not None
    assert (monitor.config.windows_per_second, monitor.config.min_interval_seconds) == (0.25, 60.0)
    version = monitor._versions[md.spec.versions[0].name]
    assert version.rate == 0.25 * md.spec.drift.window_size  # rows a second the gate lets through


def test_runs_of_a_version_are_rate_limited_whatever_the_traffic() -> None:
    monitor = thread_monitor(window_size=50, every_rows=50, min_interval_seconds=3600.0).start()
    try:
        monitor.observe("v1", gaussian(50, seed=2))
        assert monitor.wait_for_run("v1", after=0, timeout=300) is not None
        for i in range(10):  # ten more windows' worth of rows, each enough to trigger a run
            monitor.observe("v1", gaussian(50, seed=10 + i))
        assert monitor.wait_for_run("v1", after=1, timeout=3) is None
        assert monitor.runs("v1") == 1
        assert monitor.rows_seen("v1") == 550 and monitor.report("v1").rows_seen == 50
    finally:
        monitor.stop()


# -- the request path: rows written into the window behind a rate gate ---------------------------------
def _request(rows: np.ndarray) -> InferRequest:
    return InferRequest(inputs=[Tensor("x", "FP32", list(rows.shape), rows.astype(np.float32))])


def _response(probs: np.ndarray) -> InferResponse:
    return InferResponse("m", "v1", [Tensor("probabilities", "FP32", list(probs.shape), probs)])


def test_observed_requests_write_rows_and_argmax_predictions_in_order() -> None:
    monitor = DriftMonitor(
        "m",
        config=DriftConfig(
            window_size=10, every_rows=1000, isolation="thread", windows_per_second=float("inf")
        ),
    )
    monitor.add_version(
        "v1",
        reference=gaussian(50, seed=1),
        reference_predictions=np.zeros(50),
        prediction_kind="class",
        input_name="x",
        prediction_output="probabilities",
        prediction_op="argmax",
    )
    a, b, c = gaussian(2, seed=2), gaussian(1, seed=3), gaussian(3, seed=4)
    monitor.observe_request("v1", _request(a), _response(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)))
    monitor.observe_request("v1", _request(b), None)  # no prediction for this one
    monitor.observe_request("v1", _request(c), _response(np.array([[0.1, 0.9]] * 3, np.float32)))
    monitor.observe_request(
        "v1", _request(c), _response(np.array([[0.1, 0.9]] * 2, np.float32))
    )  # misaligned
    state = monitor._versions["v1"]
    rows, predictions = state.window.snapshot()
    assert np.allclose(rows, np.concatenate([a, b, c, c]).astype(np.float32))
    assert predictions[:2].tolist() == [0.0, 1.0] and np.isnan(predictions[2])
    assert predictions[3:6].tolist() == [1.0, 1.0, 1.0] and np.isnan(predictions[6:]).all()
    assert monitor.rows_seen("v1") == 9


def test_the_rate_gate_passes_a_window_burst_then_its_rate_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token bucket: one window's worth at once, then windows_per_second windows' worth a second."""
    clock = [1000.0]
    monkeypatch.setattr("ferryman.drift.monitor.time.monotonic", lambda: clock[0])
    monitor = DriftMonitor(
        "m", config=DriftConfig(window_size=4, every_rows=1000, isolation="thread", windows_per_second=1.0)
    )  # 4 rows a second
    monitor.add_version("v1", reference=gaussian(50, seed=1))
    batches = [gaussian(1, seed=10 + i) for i in range(13)]
    for rows in batches[:10]:  # a burst: the first window's worth is kept
        monitor.observe_request("v1", _request(rows), None)
    clock[0] += 0.5  # two rows' worth of tokens
    for rows in batches[10:]:
        monitor.observe_request("v1", _request(rows), None)
    monitor.observe_request("v1", _request(np.ones((2, 3))), None)  # wrong width: not a feature row
    assert monitor.rows_seen("v1") == 13
    rows, _ = monitor._versions["v1"].window.snapshot()
    assert np.allclose(rows, np.concatenate([batches[i] for i in (2, 3, 10, 11)]).astype(np.float32))
    clock[0] += 10.0  # a full bucket lets a batch larger than the window through (its newest rows stay)
    big = gaussian(6, seed=99)
    monitor.observe_request("v1", _request(big), None)
    rows, _ = monitor._versions["v1"].window.snapshot()
    assert np.allclose(rows, big[2:].astype(np.float32))


def test_a_due_window_wakes_the_worker_once_per_run() -> None:
    monitor = DriftMonitor(
        "m",
        config=DriftConfig(window_size=8, every_rows=5, isolation="thread", windows_per_second=float("inf")),
    )
    monitor.add_version("v1", reference=gaussian(50, seed=1))
    for i in range(4):
        monitor.observe_request("v1", _request(gaussian(1, seed=i)), None)
    assert not monitor._wake.is_set()
    monitor.observe_request("v1", _request(gaussian(1, seed=9)), None)
    assert monitor._wake.is_set() and monitor._versions["v1"].pending
    monitor._wake.clear()
    monitor.observe_request("v1", _request(gaussian(1, seed=10)), None)
    assert not monitor._wake.is_set()  # already pending: no second wake-up before the run


def test_rows_the_gate_skips_still_make_a_run_due_and_the_run_resets_the_count() -> None:
    monitor = DriftMonitor(
        "m",
        config=DriftConfig(
            window_size=4, every_rows=6, isolation="thread", windows_per_second=1e-6, min_rows=1
        ),
    )  # no refill to speak of
    monitor.add_version("v1", reference=gaussian(50, seed=1))
    for i in range(5):  # four kept (the burst), one skipped
        monitor.observe_request("v1", _request(gaussian(1, seed=i)), None)
    state = monitor._versions["v1"]
    assert state.skipped == 1 and not state.pending and not monitor._wake.is_set()
    monitor.observe_request("v1", _request(gaussian(1, seed=5)), None)  # the sixth row, skipped
    assert state.skipped == 2 and state.pending and monitor._wake.is_set()
    report = monitor.run_now("v1")
    assert report.window_rows == 4 and report.rows_seen == 6
    assert state.since_run() == 0 and not state.pending


def test_reset_forgets_the_window_and_the_result_of_the_previous_rollout() -> None:
    monitor = thread_monitor()
    drifted = gaussian(200, seed=5, scale0=5.0)
    monitor.observe("v1", drifted)
    report = monitor.run_now("v1")
    assert report.share is not None and report.share >= 0.25
    assert monitor.measured_at("v1") == report.last_run is not None
    monitor.observe("v1", drifted[:50])  # rows of the old rollout still in the window
    monitor.reset("v1")
    assert monitor.drift_share("v1") is None and monitor.measured_at("v1") is None
    assert monitor.report("v1").window_rows == 0
    monitor.observe("v1", gaussian(200, seed=6))  # the new rollout's rows only
    fresh = monitor.run_now("v1")
    assert fresh.share is not None and fresh.share < 0.25 and fresh.window_rows == 200
    monitor.reset("unknown")  # not monitored: nothing to forget


def test_a_run_in_flight_during_a_reset_does_not_publish() -> None:
    monitor = thread_monitor()
    monitor.observe("v1", gaussian(200, seed=7, scale0=5.0))

    class ResetDuringRun(InlineRunner):
        def run(self, job: DriftJob) -> DriftResult:
            monitor.reset("v1")  # the rollout restarts while this window is being computed
            return super().run(job)

    monitor._runner = ResetDuringRun()
    monitor.run_now("v1")
    assert monitor.drift_share("v1") is None


def test_the_runtime_drift_defaults_are_the_specs() -> None:
    """spec.drift's fields are declared (with their defaults) once, in ferryman.spec.Drift: the runtime
    config built from a default spec is the default runtime config, and from_spec carries every field."""
    from dataclasses import fields

    from ferryman.drift.monitor import FROM_SPEC
    from ferryman.spec import Drift

    shared = set(Drift.model_fields) - {"enabled"}
    assert set(FROM_SPEC) == shared and shared <= {f.name for f in fields(DriftConfig)}
    assert DriftConfig.from_spec(Drift()) == DriftConfig()
    custom = Drift(
        window_size=64,
        every_rows=7,
        threshold=0.3,
        sample_percent=12.5,
        windows_per_second=0.5,
        min_interval_seconds=1.0,
    )
    config = DriftConfig.from_spec(custom, isolation="thread")
    assert {name: getattr(config, name) for name in FROM_SPEC} == {
        name: getattr(custom, name) for name in FROM_SPEC
    }
    assert config.isolation == "thread"
