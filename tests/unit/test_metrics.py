"""ferryman.metrics: names, buckets, the request observer, rollout/drift setters, exposition, multiprocess."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, multiprocess

from ferryman import metrics, metrics_exposition
from ferryman.metrics import REQUEST_BUCKETS, FerrymanMetrics
from ferryman.protocol.tensor import InferResponse, Tensor
from ferryman.request_metrics import PrometheusObserver, _Hist
from ferryman.telemetry import RequestRecord


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(reg: CollectorRegistry) -> FerrymanMetrics:
    return FerrymanMetrics(reg)


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def record(
    code: int = 200,
    *,
    version: str = "v1",
    route: str = "stable",
    protocol: str = "v2",
    seconds: float = 0.004,
    rows: int = 1,
) -> RequestRecord:
    return RequestRecord(
        model="m",
        version=version,
        route=route,
        protocol=protocol,
        code=code,
        seconds=seconds,
        compute_seconds=seconds / 4 if rows else 0.0,
        rows=rows,
    )


def classifier_response(labels: list[int], probabilities: list[list[float]]) -> InferResponse:
    lab = np.asarray(labels, dtype=np.int64)
    prob = np.asarray(probabilities, dtype=np.float32)
    return InferResponse(
        model_name="m",
        model_version="v1",
        outputs=[
            Tensor(name="label", datatype="INT64", shape=list(lab.shape), data=lab),
            Tensor(name="probabilities", datatype="FP32", shape=list(prob.shape), data=prob),
        ],
    )


def test_request_buckets_are_dense_below_the_budget_with_a_bound_at_exactly_100ms() -> None:
    assert 0.1 in REQUEST_BUCKETS
    assert list(REQUEST_BUCKETS) == sorted(REQUEST_BUCKETS)
    below = [b for b in REQUEST_BUCKETS if b < 0.1]
    assert len(below) >= 15
    assert max(b2 - b1 for b1, b2 in itertools.pairwise(below)) <= 0.0101  # 10 ms steps at most


def test_every_family_is_prefixed_and_in_base_units(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    names = [f.name for f in reg.collect()]
    assert names and all(n.startswith("ferryman_") for n in names)
    assert "ferryman_request_duration_seconds" in names
    assert "ferryman_model_compute_duration_seconds" in names
    assert "ferryman_requests" in names  # exposed as ferryman_requests_total
    assert not any(n.endswith(("_ms", "_milliseconds", "_percent")) for n in names)
    allowed = {
        "model",
        "version",
        "route",
        "protocol",
        "code",
        "class",
        "feature",
        "phase",
        "outcome",
        "result",
        "le",
    }
    for family in reg.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (family.name, sample.labels)


def test_observer_counts_codes_latency_compute_and_batch_rows(
    m: FerrymanMetrics, reg: CollectorRegistry
) -> None:
    obs = PrometheusObserver(m)
    for _ in range(3):
        obs.started("m")
        obs.finished(record(seconds=0.004, rows=2), None, None)
    obs.started("m")
    obs.finished(record(500, seconds=0.25, rows=1), None, None)
    obs.started("m")
    obs.finished(record(400, version="", route="", seconds=0.001, rows=0), None, None)

    assert (
        value(
            reg, "ferryman_requests_total", model="m", version="v1", route="stable", protocol="v2", code="200"
        )
        == 3
    )
    assert (
        value(
            reg, "ferryman_requests_total", model="m", version="v1", route="stable", protocol="v2", code="500"
        )
        == 1
    )
    assert (
        value(reg, "ferryman_requests_total", model="m", version="", route="", protocol="v2", code="400") == 1
    )
    labels = {"model": "m", "version": "v1", "route": "stable"}
    assert value(reg, "ferryman_request_duration_seconds_count", **labels) == 4
    assert value(reg, "ferryman_request_duration_seconds_bucket", **labels, le="0.1") == 3
    assert value(reg, "ferryman_request_duration_seconds_bucket", **labels, le="0.25") == 4
    assert value(reg, "ferryman_request_duration_seconds_sum", **labels) == pytest.approx(3 * 0.004 + 0.25)
    assert value(reg, "ferryman_model_compute_duration_seconds_count", model="m", version="v1") == 4
    assert value(reg, "ferryman_batch_rows_sum", model="m", version="v1") == 7
    assert value(reg, "ferryman_requests_in_flight", model="m") == 0
    # a request that never reached a model creates no compute series
    assert value(reg, "ferryman_model_compute_duration_seconds_count", model="m", version="") is None


def test_in_flight_counts_requests_between_started_and_finished(
    m: FerrymanMetrics, reg: CollectorRegistry
) -> None:
    obs = PrometheusObserver(m)
    obs.started("m")
    obs.started("m")
    assert value(reg, "ferryman_requests_in_flight", model="m") == 2
    obs.finished(record(), None, None)
    assert value(reg, "ferryman_requests_in_flight", model="m") == 1


def test_prediction_distribution_for_a_classifier(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    obs = PrometheusObserver(m)
    obs.finished(record(rows=3), None, classifier_response([1, 0, 1], [[0.1, 0.9], [0.7, 0.3], [0.45, 0.55]]))
    obs.finished(record(rows=1), None, classifier_response([1], [[0.02, 0.98]]))
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "1"}) == 3
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "0"}) == 1
    assert value(reg, "ferryman_prediction_confidence_count", model="m", version="v1") == 4
    assert value(reg, "ferryman_prediction_confidence_sum", model="m", version="v1") == pytest.approx(
        0.9 + 0.7 + 0.55 + 0.98
    )
    assert value(reg, "ferryman_prediction_confidence_bucket", model="m", version="v1", le="0.6") == 1
    assert value(reg, "ferryman_prediction_confidence_bucket", model="m", version="v1", le="0.9") == 3
    # a classifier's scores are not regression values
    assert value(reg, "ferryman_prediction_value_count", model="m", version="v1") is None
    # failed requests are not predictions
    obs.finished(record(500), None, classifier_response([0], [[0.9, 0.1]]))
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "0"}) == 1


def test_prediction_values_for_a_regressor(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    out = np.asarray([[0.5], [3.0], [-20.0]], dtype=np.float32)
    response = InferResponse(
        model_name="m",
        model_version="v1",
        outputs=[Tensor(name="y", datatype="FP32", shape=[3, 1], data=out)],
    )
    PrometheusObserver(m).finished(record(rows=3), None, response)
    assert value(reg, "ferryman_prediction_value_count", model="m", version="v1") == 3
    assert value(reg, "ferryman_prediction_value_bucket", model="m", version="v1", le="1.0") == 2
    assert value(reg, "ferryman_prediction_value_bucket", model="m", version="v1", le="-10.0") == 1


def test_a_batch_counts_like_the_same_rows_one_request_each(reg: CollectorRegistry) -> None:
    """Small outputs are read in Python, large batches with numpy: both give the same distribution."""
    rng = np.random.default_rng(7)
    probs = rng.random((200, 3)).astype(np.float32)
    labels = probs.argmax(axis=1).tolist()
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    obs = PrometheusObserver(FerrymanMetrics(one_by_one))
    for label, row in zip(labels, probs.tolist(), strict=True):
        obs.finished(record(rows=1), None, classifier_response([label], [row]))
    batched_metrics = FerrymanMetrics(
        batched
    )  # kept alive: a registry's flush-on-collect holds its metrics weakly
    PrometheusObserver(batched_metrics).finished(
        record(rows=200), None, classifier_response(labels, probs.tolist())
    )
    labels_of = {"model": "m", "version": "v1"}
    for cls in ("0", "1", "2"):
        assert (
            value(one_by_one, "ferryman_predictions_total", **labels_of, **{"class": cls})
            == value(batched, "ferryman_predictions_total", **labels_of, **{"class": cls})
            == labels.count(int(cls))
        )
    for le in ("0.4", "0.6", "0.8", "0.9", "+Inf"):
        assert value(one_by_one, "ferryman_prediction_confidence_bucket", **labels_of, le=le) == value(
            batched, "ferryman_prediction_confidence_bucket", **labels_of, le=le
        )
    assert value(one_by_one, "ferryman_prediction_confidence_sum", **labels_of) == pytest.approx(
        value(batched, "ferryman_prediction_confidence_sum", **labels_of)
    )


def test_non_finite_regression_values_are_skipped(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    obs = PrometheusObserver(m)
    for out in ([[1.0], [float("nan")], [float("inf")]], [[2.0]] * 10 + [[float("-inf")]] * 10):
        data = np.asarray(out, dtype=np.float32)
        obs.finished(
            record(rows=len(out)),
            None,
            InferResponse(
                model_name="m",
                model_version="v1",
                outputs=[Tensor(name="y", datatype="FP32", shape=list(data.shape), data=data)],
            ),
        )
    assert value(reg, "ferryman_prediction_value_count", model="m", version="v1") == 11
    assert value(reg, "ferryman_prediction_value_bucket", model="m", version="v1", le="1.0") == 1


def test_one_label_per_request_beyond_the_class_limit_counts_as_other(
    m: FerrymanMetrics, reg: CollectorRegistry
) -> None:
    obs = PrometheusObserver(m)
    for label in range(metrics.MAX_CLASSES + 5):
        obs.finished(record(), None, classifier_response([label], [[0.5, 0.5]]))
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "other"}) == 5
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "0"}) == 1


def test_publishing_from_another_thread_never_loses_or_doubles_a_request(
    m: FerrymanMetrics, reg: CollectorRegistry
) -> None:
    """The multiprocess timer publishes on its own thread while the event loop keeps counting."""
    obs = PrometheusObserver(m)
    stop = threading.Event()
    published = []

    def publisher() -> None:
        while not stop.is_set():
            published.append(obs.flush())

    thread = threading.Thread(target=publisher)
    thread.start()
    n = 20_000
    try:
        for i in range(n):
            obs.finished(
                record(seconds=0.001 * (i % 7), rows=1 + i % 3),
                None,
                classifier_response([i % 2], [[0.3, 0.7]]),
            )
    finally:
        stop.set()
        thread.join()
    published.append(obs.flush())
    assert sum(published) == n
    assert len([p for p in published if p]) > 1  # it really published while requests were being counted
    labels = {"model": "m", "version": "v1", "route": "stable"}
    assert value(reg, "ferryman_request_duration_seconds_count", **labels) == n
    assert value(reg, "ferryman_requests_total", **labels, protocol="v2", code="200") == n
    assert value(reg, "ferryman_batch_rows_sum", model="m", version="v1") == sum(1 + i % 3 for i in range(n))
    assert value(reg, "ferryman_request_duration_seconds_sum", **labels) == pytest.approx(
        sum(0.001 * (i % 7) for i in range(n))
    )
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "1"}) == n // 2


def test_class_labels_are_bounded(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    obs = PrometheusObserver(m)
    n = metrics.MAX_CLASSES + 10
    obs.finished(record(rows=n), None, classifier_response(list(range(n)), [[1.0, 0.0]] * n))
    classes = {
        s.labels["class"] for f in reg.collect() if f.name == "ferryman_predictions" for s in f.samples
    }
    assert len(classes) == metrics.MAX_CLASSES + 1 and "other" in classes
    assert value(reg, "ferryman_predictions_total", model="m", version="v1", **{"class": "other"}) == 10


def test_a_bulk_add_equals_observing_one_by_one(reg: CollectorRegistry) -> None:
    bulk = Histogram("bulk", "", buckets=metrics.CONFIDENCE_BUCKETS, registry=reg)
    loop = Histogram("loop", "", buckets=metrics.CONFIDENCE_BUCKETS, registry=reg)
    values = np.random.default_rng(1).uniform(0, 1, size=1000)
    values[[3, 7]] = [0.5, 1.0]  # exactly on bounds: le is inclusive
    values[11] = np.nan  # ignored
    counts = _Hist(bulk)
    counts.add_many(values)
    assert counts.publish() == 999
    for v in values[np.isfinite(values)]:
        loop.observe(float(v))
    for bound in [*map(str, metrics.CONFIDENCE_BUCKETS), "+Inf"]:
        assert reg.get_sample_value("bulk_bucket", {"le": bound}) == reg.get_sample_value(
            "loop_bucket", {"le": bound}
        )
    assert reg.get_sample_value("bulk_sum") == pytest.approx(reg.get_sample_value("loop_sum"))


def test_traffic_weights_rollout_state_and_analysis(m: FerrymanMetrics, reg: CollectorRegistry) -> None:
    m.set_traffic_weights("m", {"v1": 95, "v2": 5}, shadow={"v2": 10})
    assert value(reg, "ferryman_traffic_weight_ratio", model="m", version="v1") == pytest.approx(0.95)
    assert value(reg, "ferryman_traffic_shadow_ratio", model="m", version="v2") == pytest.approx(0.10)
    m.set_traffic_weights("m", {"v2": 100})
    assert value(reg, "ferryman_traffic_weight_ratio", model="m", version="v1") == 0  # left the split
    assert value(reg, "ferryman_traffic_weight_ratio", model="m", version="v2") == 1

    m.set_rollout_state("m", phase="Progressing", step=1, steps=4)
    m.set_rollout_state("m", phase="RolledBack", step=1, steps=4)
    phases = {
        s.labels["phase"]: s.value
        for f in reg.collect()
        if f.name == "ferryman_rollout_phase"
        for s in f.samples
    }
    assert phases["rolled_back"] == 1
    assert sum(phases.values()) == 1 and set(metrics.ROLLOUT_PHASES) <= set(phases)
    assert value(reg, "ferryman_rollout_step", model="m") == 1

    m.init_analysis("m", "v2")
    assert value(reg, "ferryman_rollout_analysis_total", model="m", version="v2", outcome="rollback") == 0
    m.record_analysis("m", "v2", "advance", p99_seconds=0.012, error_ratio=0.0)
    m.record_analysis("m", "v2", "rolled_back")
    m.record_analysis("m", "v2", "something new")
    assert value(reg, "ferryman_rollout_analysis_total", model="m", version="v2", outcome="advance") == 1
    assert value(reg, "ferryman_rollout_analysis_total", model="m", version="v2", outcome="rollback") == 1
    assert value(reg, "ferryman_rollout_analysis_total", model="m", version="v2", outcome="other") == 1
    assert value(reg, "ferryman_rollout_analysis_p99_seconds", model="m", version="v2") == pytest.approx(
        0.012
    )


def test_drift_results_become_gauges_with_bounded_features(
    m: FerrymanMetrics, reg: CollectorRegistry
) -> None:
    n = metrics.MAX_FEATURES + 5
    scores = {f"f{i}": 0.5 for i in range(n)}
    scores["f0"] = 1e-9
    m.record_drift(
        "m",
        "v2",
        scores=scores,
        drifted={"f0": True},
        share=1 / n,
        detected=False,
        window_rows=500,
        threshold=0.5,
        prediction_score=0.2,
        prediction_drifted=False,
        run_seconds=0.05,
        at=123.0,
    )
    assert value(reg, "ferryman_drift_score", model="m", version="v2", feature="f0") == pytest.approx(1e-9)
    assert value(reg, "ferryman_drift_feature_drifted", model="m", version="v2", feature="f0") == 1
    assert value(reg, "ferryman_drift_share", model="m", version="v2") == pytest.approx(1 / n)
    assert value(reg, "ferryman_drift_detected", model="m", version="v2") == 0
    assert value(reg, "ferryman_drift_last_run_timestamp_seconds", model="m", version="v2") == 123.0
    assert value(reg, "ferryman_drift_runs_total", model="m", version="v2", result="ok") == 1
    features = {
        s.labels["feature"] for f in reg.collect() if f.name == "ferryman_drift_score" for s in f.samples
    }
    assert len(features) == metrics.MAX_FEATURES


def test_metrics_endpoint_serves_the_text_format() -> None:
    metrics.set_budget("endpoint-test", p99_seconds=0.1, max_error_ratio=0.01)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(metrics_exposition.metrics_endpoint(None, None, send))
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    body = sent[1]["body"].decode()
    assert int(headers[b"content-length"]) == len(sent[1]["body"])
    assert 'ferryman_budget_p99_seconds{model="endpoint-test"} 0.1' in body


WORKER = textwrap.dedent("""
    import os, sys
    from ferryman import metrics
    from ferryman.request_metrics import PrometheusObserver
    from ferryman.telemetry import RequestRecord
    obs = PrometheusObserver()
    metrics.set_model_ready("m", "v1", True)
    for i in range(int(sys.argv[1])):
        obs.started("m")
        obs.finished(RequestRecord(model="m", version="v1", route="direct", protocol="v2", code=200,
                                   seconds=0.002, compute_seconds=0.001, rows=1), None, None)
    obs.started("m")  # dies with one request in flight
    obs.flush()  # what the shutdown hook / the multiprocess timer does (os._exit skips both)
    os._exit(0)
""")


def test_multiprocess_mode_sums_exited_workers_and_reaps_their_live_gauges(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (7, 5):
        subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True, timeout=60)
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=str(tmp_path))
    labels = {"model": "m", "version": "v1", "route": "direct", "protocol": "v2"}
    assert reg.get_sample_value("ferryman_requests_total", {**labels, "code": "200"}) == 12
    assert (
        reg.get_sample_value(
            "ferryman_request_duration_seconds_count", {"model": "m", "version": "v1", "route": "direct"}
        )
        == 12
    )
    assert (
        reg.get_sample_value("ferryman_requests_in_flight", {"model": "m"}) == 2
    )  # stale, from dead workers

    reaped = metrics_exposition.reap_dead_workers(str(tmp_path))
    assert len(reaped) == 2
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=str(tmp_path))
    assert reg.get_sample_value("ferryman_requests_total", {**labels, "code": "200"}) == 12  # nothing lost
    assert reg.get_sample_value("ferryman_requests_in_flight", {"model": "m"}) is None
    assert reg.get_sample_value("ferryman_model_ready", {"model": "m", "version": "v1"}) is None


def test_prepare_multiprocess_wipes_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not ours")
    # set, then removed: monkeypatch then removes what prepare_multiprocess sets (a bare delenv of an absent
    # variable records nothing, and the directory leaked into every later test's subprocesses, whose /metrics
    # then summed each other's requests)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    from prometheus_client import values

    before = values.ValueClass
    monkeypatch.setattr(metrics, "_default", None)  # as in a fresh server parent: no metrics created yet
    try:
        assert metrics_exposition.prepare_multiprocess(tmp_path) == tmp_path
        assert not stale.exists() and (tmp_path / "keep.txt").exists()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
        assert getattr(values.ValueClass, "_multiprocess", False)
    finally:
        values.ValueClass = before


def test_prepare_multiprocess_refuses_once_metrics_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.default()
    (tmp_path / "counter_1.db").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="before ferryman metrics are created"):
        metrics_exposition.prepare_multiprocess(tmp_path)
    assert (tmp_path / "counter_1.db").exists()  # nothing touched
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


@pytest.mark.parametrize(
    "first",
    ["ferryman.request_metrics", "ferryman.metrics", "ferryman.metrics_flush", "ferryman.metrics_exposition"],
)
def test_each_metrics_module_imports_first(first: str) -> None:
    """The metrics modules import one another in one direction only: any of them can be imported first."""
    code = (
        f"import {first}; from ferryman.request_metrics import PrometheusObserver; "
        "print(PrometheusObserver.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PrometheusObserver"


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(np.arange(40, dtype=np.int64) % 3, id="small-ids"),
        pytest.param(np.array([-2, -1, 0, 1] * 10, dtype=np.int64), id="negative"),
        pytest.param(np.array([0, 5_000, 1_000_000, 7] * 10, dtype=np.int64), id="large-ids"),
        pytest.param(np.array([0, 1, 2, 2**63 + 5] * 10, dtype=np.uint64), id="uint64"),
        pytest.param(np.array([True, False, True] * 10), id="bool"),
    ],
)
def test_large_batches_count_classes_like_single_rows(labels: np.ndarray) -> None:
    """The batch path (bincount for small non-negative ids, a sort otherwise) and the one-row path agree."""
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    single = PrometheusObserver(FerrymanMetrics(one_by_one))

    def response(lab: np.ndarray) -> InferResponse:
        return InferResponse(
            model_name="m",
            model_version="v1",
            outputs=[Tensor(name="label", datatype="INT64", shape=list(lab.shape), data=lab)],
        )

    for i in range(labels.size):
        single.finished(record(rows=1), None, response(labels[i : i + 1]))
    PrometheusObserver(FerrymanMetrics(batched)).finished(record(rows=labels.size), None, response(labels))

    def classes(reg: CollectorRegistry) -> dict[str, float]:
        return {
            s.labels["class"]: s.value
            for family in reg.collect()
            if family.name == "ferryman_predictions"
            for s in family.samples
            if s.name == "ferryman_predictions_total"
        }

    counted = classes(batched)
    assert counted == classes(one_by_one)
    assert sum(counted.values()) == labels.size
