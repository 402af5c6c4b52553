"""Canary over real HTTP: the observed split matches the weights, accounting is exact, pins bypass the
split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers.gateway import Client, Load, UpServer, ferryman_up, traffic_rows, wait_until, write_spec

REQUESTS = 5_000
CANDIDATE_PERCENT = 30


@pytest.fixture(scope="module")
def canary(sample_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    d = tmp_path_factory.mktemp("canary")
    # held at the first step: the interval is far longer than the test
    spec = write_spec(
        d / "deployment.yaml",
        versions=sample_models.versions,
        traffic={
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {
                "steps": [CANDIDATE_PERCENT, 100],
                "intervalSeconds": 86_400,
                "failureThreshold": 2,
                "minRequests": 10,
            },
        },
    )
    with ferryman_up(spec, d / "state") as up:
        yield up


def _counts(up: UpServer) -> dict[tuple[str, str], int]:
    return {k: r["requests"] for k, r in traffic_rows(up.status()).items()}


def test_observed_split_matches_weights_and_accounting_is_exact(
    canary: UpServer, traffic: np.ndarray
) -> None:
    rollout = canary.rollout()
    assert rollout["phase"] == "Progressing"
    assert rollout["weights"] == {"v1": 100 - CANDIDATE_PERCENT, "v2": CANDIDATE_PERCENT}
    before = _counts(canary)

    with Load(canary.url, traffic, threads=4, max_requests=REQUESTS, max_seconds=150) as load:
        wait_until(lambda: load.count() >= REQUESTS, timeout=150, interval=0.5, what=f"{REQUESTS} requests")
    outcomes = load.outcomes
    assert len(outcomes) >= REQUESTS
    assert [o for o in outcomes if o.status != 200] == []
    seen = Counter(o.version for o in outcomes)
    assert set(seen) == {"v1", "v2"}
    total = sum(seen.values())
    share_v2 = 100.0 * seen["v2"] / total
    share_v1 = 100.0 * seen["v1"] / total
    assert abs(share_v2 - CANDIDATE_PERCENT) <= 3.0, seen
    assert abs(share_v1 - (100 - CANDIDATE_PERCENT)) <= 3.0, seen

    # the gateway's per-(version, route) accounting counted exactly what the clients saw
    after = _counts(canary)
    assert after.get(("v1", "stable"), 0) - before.get(("v1", "stable"), 0) == seen["v1"]
    assert after.get(("v2", "candidate"), 0) - before.get(("v2", "candidate"), 0) == seen["v2"]
    rows = traffic_rows(canary.status())
    assert rows[("v1", "stable")]["errors"] == 0 and rows[("v2", "candidate")]["errors"] == 0
    assert rows[("v2", "candidate")]["p99Ms"] is not None

    # still at the first step: nothing decided behind the test's back
    assert canary.rollout()["weights"] == rollout["weights"]


def test_pins_by_path_and_header_bypass_the_split(canary: UpServer, traffic: np.ndarray) -> None:
    before = _counts(canary)
    with Client(canary.url) as client:
        by_path = [client.version_of(traffic[i], version="v2") for i in range(20)]
        by_header = [client.version_of(traffic[i], headers={"x-ferryman-version": "v1"}) for i in range(20)]
        header_v2 = [client.version_of(traffic[i], headers={"X-Ferryman-Version": "v2"}) for i in range(10)]
        unknown_header = client.infer(traffic[0], headers={"x-ferryman-version": "v9"})
        unknown_path = client.infer(traffic[0], version="v9")
    assert by_path == ["v2"] * 20
    assert by_header == ["v1"] * 20
    assert header_v2 == ["v2"] * 10
    for resp in (unknown_header, unknown_path):
        assert resp.status_code == 404, resp.text
        assert "v9" in resp.json()["error"]
    after = _counts(canary)
    assert after[("v2", "pinned")] - before.get(("v2", "pinned"), 0) == 30
    assert after[("v1", "pinned")] - before.get(("v1", "pinned"), 0) == 20
    # the pinned requests did not count as canary traffic
    assert after.get(("v2", "candidate"), 0) == before.get(("v2", "candidate"), 0)
