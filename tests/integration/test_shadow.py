"""Shadow over real HTTP: the candidate sees mirrored requests, callers see only stable, a broken candidate is
harmless."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers import models
from tests.helpers.gateway import (
    Client,
    Load,
    UpServer,
    actions,
    ferryman_up,
    traffic_rows,
    wait_until,
    write_spec,
)


def _shadow_spec(versions: dict[str, Any], *, candidate: str, percent: float | None = None) -> dict[str, Any]:
    traffic: dict[str, Any] = {"strategy": "shadow", "stable": "v1", "candidate": candidate}
    if percent is not None:
        traffic["shadow"] = {"percent": percent}
    return {"versions": versions, "traffic": traffic}


def _mirrored(up: UpServer, version: str) -> dict[str, Any]:
    return traffic_rows(up.status()).get((version, "shadow"), {"requests": 0, "errors": 0})


def test_candidate_sees_every_mirrored_request_and_callers_get_stable_answers(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    versions = sample_models.versions
    spec = write_spec(tmp_path / "deployment.yaml", **_shadow_spec(versions, candidate="v2"))
    rows = traffic[:150]
    expected = models.reference_outputs(versions["v1"], {"input": rows})["probabilities"]
    other = models.reference_outputs(versions["v2"], {"input": rows})["probabilities"]
    assert not np.allclose(expected, other)  # the comparison below can tell the two versions apart

    with ferryman_up(spec, tmp_path / "state") as up:
        assert up.rollout()["phase"] == "Running"
        with Client(up.url) as client:
            answers = [client.infer(row) for row in rows]
        assert [a.status_code for a in answers] == [200] * len(rows)
        assert {a.json()["model_version"] for a in answers} == {"v1"}
        got = np.array([a.json()["outputs"][1]["data"] for a in answers], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

        # every request was mirrored to v2, after the caller had its answer
        wait_until(
            lambda: _mirrored(up, "v2")["requests"] == len(rows),
            timeout=30,
            what="all shadow copies",
            detail=lambda: (up.status()["shadow"], _mirrored(up, "v2")),
        )
        status = up.status()
        rows_by_route = traffic_rows(status)
        assert rows_by_route[("v1", "stable")]["requests"] == len(rows)
        assert rows_by_route[("v2", "shadow")]["errors"] == 0
        assert ("v2", "candidate") not in rows_by_route
        assert status["shadow"]["requests"] == len(rows) and status["shadow"]["errors"] == 0

        # mirror only half: edit the spec, the gateway re-reads it
        write_spec(spec, **_shadow_spec(versions, candidate="v2", percent=50))
        wait_until(lambda: actions(up.rollout()).count("start") == 2, timeout=30, what="the edited spec")
        before = _mirrored(up, "v2")["requests"]
        with Client(up.url) as client:
            assert {client.version_of(traffic[i % len(traffic)]) for i in range(400)} == {"v1"}
        wait_until(lambda: _all_shadows_finished(up, "v2"), timeout=30, what="shadow copies to finish")
        half = _mirrored(up, "v2")["requests"] - before
        assert 140 <= half <= 260, half  # 50 % of 400, well inside 6 standard deviations


def _all_shadows_finished(up: UpServer, version: str) -> bool:
    status = up.status()
    finished = traffic_rows(status).get((version, "shadow"), {"requests": 0})["requests"]
    return bool(status["shadow"]["requests"] == finished)


def test_a_failing_candidate_causes_no_caller_errors(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    broken = models.failing_model(tmp_path / "broken.onnx")
    versions = {"v1": sample_models.versions["v1"], "broken": broken}
    spec = write_spec(tmp_path / "deployment.yaml", **_shadow_spec(versions, candidate="broken", percent=100))
    with ferryman_up(spec, tmp_path / "state") as up:
        with Client(up.url) as client:  # the candidate really fails when asked directly
            direct = client.infer(traffic[0], version="broken")
        assert direct.status_code == 500 and "error" in direct.json()

        with Load(up.url, traffic, threads=4, max_requests=300, max_seconds=120) as load:
            wait_until(lambda: load.count() >= 300, timeout=120, what="300 requests")
        outcomes = load.outcomes
        assert [o for o in outcomes if o.status != 200] == []
        assert {o.version for o in outcomes} == {"v1"}

        def accounted() -> bool:  # every copy ran (and failed) or was dropped by the bounded shadow queue
            status = up.status()
            ran = traffic_rows(status).get(("broken", "shadow"), {"requests": 0})["requests"]
            return bool(ran + status["shadow"]["dropped"] == len(outcomes) and ran > 0)

        wait_until(
            accounted,
            timeout=30,
            what="every shadow copy to be accounted",
            detail=lambda: (up.status()["shadow"], _mirrored(up, "broken"), len(outcomes)),
        )
        mirrored = _mirrored(up, "broken")
        status = up.status()
        assert mirrored["errors"] == mirrored["requests"]  # every copy that ran failed, and no caller noticed
        assert status["shadow"]["errors"] == mirrored["requests"]
        assert traffic_rows(status)[("v1", "stable")]["errors"] == 0
        assert up.alive()
