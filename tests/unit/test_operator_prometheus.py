"""The PromQL the analysis sends and how answers are read (the real Prometheus is in
tests/integration/test_operator_prometheus.py)."""

from __future__ import annotations

import pytest

from ferryman_operator.prometheus import QueryError, queries, scalar, selector


def test_selector() -> None:
    assert selector(model="m", version="v1", namespace="ns", namespace_label="namespace") == \
        'model="m", version="v1", namespace="ns"'
    assert selector(model="m", version="v1", namespace="ns", namespace_label="") == 'model="m", version="v1"'
    assert selector(model='a"b', version="v\\1", namespace=None, namespace_label="namespace",
                    extra='container="gateway",') == 'model="a\\"b", version="v\\\\1", container="gateway"'


def test_queries_use_the_declared_metrics_over_the_window() -> None:
    q = queries('model="m", version="v2"', 12.2)
    assert q["requests"] == 'sum(increase(ferryman_requests_total{model="m", version="v2", code!~"4.."}[13s]))'
    assert q["errors"] == 'sum(increase(ferryman_requests_total{model="m", version="v2", code=~"5.."}[13s]))'
    assert q["p99"] == ('histogram_quantile(0.99, sum by (le) (increase('
                        'ferryman_request_duration_seconds_bucket{model="m", version="v2"}[13s])))')
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
    ok = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2.5"]}]}}
    assert scalar(ok) == 2.5
    assert scalar({"status": "success", "data": {"result": []}}) is None
    nan = {"status": "success", "data": {"result": [{"metric": {}, "value": [1, "NaN"]}]}}
    assert scalar(nan) is None
    with pytest.raises(QueryError):
        scalar({"status": "error", "error": "bad"})
