"""Live drift: one feature scaled x3 raises the drift share above the threshold within one window,
visible on /metrics, /drift and in a real Prometheus; and the rollout analysis vetoes a drifted canary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.helpers.gateway import ferryman_up, wait_until
from tests.helpers.prometheus import parse_exposition, prometheus, prometheus_binary, sample_sum
from tests.helpers.servers import serve_cli

MODEL = "drift-demo"
FEATURES = 4
WINDOW = 200
THRESHOLD = 0.25  # one drifted feature out of four


@dataclass
class DriftModels:
    directory: Path
    versions: dict[str, Path]
    reference: Path


def rows(n: int, seed: int, *, scale0: float = 1.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)
    x[:, 0] *= scale0
    return x


@pytest.fixture(scope="module")
def drift_models(tmp_path_factory: pytest.TempPathFactory) -> DriftModels:
    """Two small classifiers over four N(0, 1) features, and the reference rows they were trained on."""
    from sklearn.linear_model import LogisticRegression

    from ferryman.examples import to_onnx

    d = tmp_path_factory.mktemp("drift-models")
    x = rows(800, seed=1)
    y = (x[:, 1] + x[:, 2] > 0).astype(np.int64)
    reference = d / "reference.npy"
    np.save(reference, x)
    versions = {}
    for name, c in (("v1", 1.0), ("v2", 0.5)):
        path = d / f"{name}.onnx"
        path.write_bytes(to_onnx(LogisticRegression(C=c).fit(x, y), n_features=FEATURES))
        versions[name] = path
    return DriftModels(d, versions, reference)


def spec(models: DriftModels, path: Path, traffic: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "versions": [
                {"name": v, "uri": str(p), "referenceData": str(models.reference)}
                for v, p in models.versions.items()
            ],
            "traffic": traffic,
            "drift": {"enabled": True, "windowSize": WINDOW, "everyRows": WINDOW, "threshold": THRESHOLD},
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def infer(client: httpx.Client, x: np.ndarray, *, version: str | None = None) -> None:
    path = f"/v2/models/{MODEL}/versions/{version}/infer" if version else f"/v2/models/{MODEL}/infer"
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text


def drift_report(client: httpx.Client, version: str) -> dict[str, Any]:
    r = client.get("/drift")
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()[MODEL][version]
    return report


def wait_for_run(
    client: httpx.Client, version: str, *, rows_seen: int, timeout: float = 300
) -> dict[str, Any]:
    """The report of the run that covered ``rows_seen`` rows (Evidently's first import can take a while)."""

    def done() -> dict[str, Any] | None:
        report = drift_report(client, version)
        return report if report["last_run"] and report["rows_seen"] >= rows_seen else None

    result: dict[str, Any] = wait_until(done, timeout=timeout, interval=0.5, what=f"a drift run of {version}")
    return result


@pytest.fixture
def served(drift_models: DriftModels, tmp_path: Path) -> Iterator[Any]:
    path = spec(drift_models, tmp_path / "deployment.yaml", {"strategy": "static", "stable": "v1"})
    with serve_cli(path) as server:
        yield server


@pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed")
def test_one_feature_x3_drifts_within_one_window_visible_in_prometheus(served: Any) -> None:
    host = served.url.removeprefix("http://")
    with prometheus({"ferryman": [host]}) as prom, httpx.Client(base_url=served.url, timeout=60) as client:
        for chunk in np.split(rows(WINDOW, seed=2), 20):  # one window of in-distribution traffic
            infer(client, chunk)
        first = wait_for_run(client, "v1", rows_seen=WINDOW)
        assert first["error"] is None
        assert first["share"] < THRESHOLD and first["drifted"] is False
        # a completed run means the drift process has loaded its engine, and /drift says so
        assert client.get("/drift").headers["x-ferryman-drift-engine"] == "ready"
        prom.wait_for(f'ferryman_drift_detected{{model="{MODEL}", version="v1"}} == 0', timeout=60)

        for chunk in np.split(rows(WINDOW, seed=3, scale0=3.0), 20):  # exactly one window of shifted traffic
            infer(client, chunk)
        second = wait_for_run(client, "v1", rows_seen=2 * WINDOW)
        assert second["drifted"] is True and second["share"] >= THRESHOLD
        assert "input_0" in second["drifted_features"]
        assert second["window_rows"] == WINDOW

        samples = parse_exposition(client.get("/metrics").text)
        assert sample_sum(samples, "ferryman_drift_detected", model=MODEL, version="v1") == 1
        assert sample_sum(samples, "ferryman_drift_share", model=MODEL, version="v1") >= THRESHOLD
        assert (
            sample_sum(
                samples, "ferryman_drift_feature_drifted", model=MODEL, version="v1", feature="input_0"
            )
            == 1
        )

        prom.wait_for(f'ferryman_drift_detected{{model="{MODEL}", version="v1"}} == 1', timeout=60)
        above = prom.wait_for(
            f'max by (version) (ferryman_drift_share{{model="{MODEL}"}}) >= on() group_left '
            f'max(ferryman_drift_share_threshold{{model="{MODEL}"}})',
            timeout=60,
        )
        assert [r["metric"]["version"] for r in above] == ["v1"]


def test_the_rollout_analysis_vetoes_a_drifted_canary(drift_models: DriftModels, tmp_path: Path) -> None:
    path = spec(
        drift_models,
        tmp_path / "deployment.yaml",
        {
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": [5, 25, 50, 100],
                "intervalSeconds": 1,
                "failureThreshold": 1,
                "minRequests": 60,
            },
        },
    )
    with ferryman_up(path, tmp_path / "state") as up, httpx.Client(base_url=up.url, timeout=60) as client:
        shifted = rows(WINDOW, seed=4, scale0=3.0)
        for chunk in np.split(shifted, 4):  # four pinned requests fill v2's window: too few for an analysis
            infer(client, chunk, version="v2")
        report = wait_for_run(client, "v2", rows_seen=WINDOW)
        assert report["drifted"] is True
        rollout = up.rollout()
        assert rollout["phase"] == "Progressing", rollout  # held (not enough requests), not yet judged

        for x in rows(70, seed=5, scale0=3.0):  # enough requests: latency and errors are fine, drift is not
            infer(client, x.reshape(1, -1), version="v2")
        rolled = wait_until(
            lambda: (r := up.rollout())["phase"] == "RolledBack" and r, timeout=60, what="the rollback"
        )
        assert rolled["weights"] == {"v1": 100}
        last = rolled["history"][-1]
        assert last["action"] == "rollback" and "drift_share" in last["reason"], last

        samples = parse_exposition(client.get("/metrics").text)
        assert sample_sum(samples, "ferryman_rollout_phase", model=MODEL, phase="rolled_back") == 1
        assert (
            sample_sum(
                samples, "ferryman_rollout_analysis_total", model=MODEL, version="v2", outcome="rollback"
            )
            == 1
        )
        assert sample_sum(samples, "ferryman_traffic_weight_ratio", model=MODEL, version="v1") == 1
        assert sample_sum(samples, "ferryman_traffic_weight_ratio", model=MODEL, version="v2") == 0
