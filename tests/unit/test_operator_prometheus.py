"""The PromQL the analysis sends and how answers are read (the real Prometheus is in
tests/integration/test_operator_prometheus.py)."""

from __future__ import annotations

import pytest

from ferryman_operator.prometheus import QueryError, queries, scalar, selector


def test_selector() -> None:
    assert (
        selector(model="m", version="v1", namespace="ns", namespace_label="namespace")
        == 'model="m", version="v1", namespace="ns"'
    )
    assert selector(model="m", version="v1", namespace="ns", namespace_label="") == 'model="m", version="v1"'
    assert (
        selector(
            model='a"b',
            version="v\\1",
            namespace=None,
            namespace_label="namespace",
            extra='container="gateway",',
        )
        == 'model="a\\"b", version="v\\\\1", container="gateway"'
    )


def test_queries_use_the_declared_metrics_over_the_window() -> None:
    q = queries('model="m", version="v2"', 12.2)
    assert (
        q["requests"] == 'sum(increase(ferryman_requests_total{model="m", version="v2", code!~"4.."}[13s]))'
    )
    assert q["errors"] == 'sum(increase(ferryman_requests_total{model="m", version="v2", code=~"5.."}[13s]))'
    assert q["p99"] == (
        "histogram_quantile(0.99, sum by (le) (increase("
        'ferryman_request_duration_seconds_bucket{model="m", version="v2"}[13s])))'
    )
    assert q["drift"] == 'max(ferryman_drift_share{model="m", version="v2"})'
    # when that share was measured: a run from before the rollout started does not count for it
    assert q["drift_at"] == 'max(ferryman_drift_last_run_timestamp_seconds{model="m", version="v2"})'
    assert queries("x", 0.0)["requests"].endswith("[1s]))")


def test_metric_names_match_the_declarations() -> None:
    from prometheus_client import CollectorRegistry

    from ferryman.metrics import FerrymanMetrics

    m = FerrymanMetrics(CollectorRegistry())
    assert m.requests._name == "ferryman_requests" and "code" in m.requests._labelnames  # exposed as *_total
    assert m.request_duration._name == "ferryman_request_duration_seconds"
    assert m.drift_share._name == "ferryman_drift_share"
    assert m.drift_last_run._name == "ferryman_drift_last_run_timestamp_seconds"
    assert {"model", "version"} <= set(m.request_duration._labelnames)


def test_scalar() -> None:
    ok = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2.5"]}]},
    }
    assert scalar(ok) == 2.5
    assert scalar({"status": "success", "data": {"result": []}}) is None
    nan = {"status": "success", "data": {"result": [{"metric": {}, "value": [1, "NaN"]}]}}
    assert scalar(nan) is None
    with pytest.raises(QueryError):
        scalar({"status": "error", "error": "bad"})


def test_batched_windows_and_queries() -> None:
    from ferryman_operator.prometheus import batch_queries, vector, window_grid

    assert [window_grid(w) for w in (0.0, 12.2, 59.5)] == [1, 13, 60]
    assert [window_grid(w) for w in (61.0, 599.0, 601.0, 3599.0, 7300.0)] == [60, 590, 600, 3540, 7200]
    assert all(window_grid(w) <= w for w in (61.0, 333.3, 4000.0))  # never reaches back before the step began
    q = batch_queries(by=("namespace", "model", "version"), extra="", window=30)
    assert (
        q["requests"]
        == 'sum by (namespace, model, version) (increase(ferryman_requests_total{code!~"4.."}[30s]))'
    )
    assert q["p99"] == (
        "histogram_quantile(0.99, sum by (le, namespace, model, version) "
        "(increase(ferryman_request_duration_seconds_bucket{}[30s])))"
    )
    assert q["drift_at"] == "max by (namespace, model, version) (ferryman_drift_last_run_timestamp_seconds{})"
    q = batch_queries(by=("model", "version"), extra='container="gateway",', window=5)
    assert (
        q["errors"]
        == 'sum by (model, version) (increase(ferryman_requests_total{container="gateway", code=~"5.."}[5s]))'
    )
    doc = {
        "status": "success",
        "data": {
            "result": [
                {"metric": {"namespace": "a", "model": "m", "version": "v1"}, "value": [1, "3"]},
                {"metric": {"namespace": "b", "model": "m", "version": "v2"}, "value": [1, "NaN"]},
            ]
        },
    }
    assert vector(doc, ("namespace", "model", "version")) == {("a", "m", "v1"): 3.0, ("b", "m", "v2"): None}
    with pytest.raises(QueryError):
        vector({"status": "error"}, ("model",))
