"""``ferryman up --grpc-port``: gRPC goes through the gateway's policy like REST. A canary's weights hold
over gRPC and the exact accounting counts every gRPC request; ``model_version`` and the pin header (sent as
metadata) pin; a sticky A/B key in metadata picks the arm REST picks for the same key; shadow copies run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.helpers.gateway import MODEL, UpServer, arms_for, start_up, traffic_rows, wait_until, write_spec
from tests.helpers.ports import free_port
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.servers import GRPC_TRANSPORTS

CANDIDATE_PERCENT = 30
REQUESTS = 1_000


def _up(spec: Path, state: Path, *, transport: str) -> tuple[UpServer, str]:
    port = free_port()
    server = start_up(spec, state, args=["--grpc-port", str(port), "--grpc-transport", transport])
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module", params=GRPC_TRANSPORTS)
def canary(
    sample_models, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[UpServer, str]]:
    d = tmp_path_factory.mktemp("grpc-canary")
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
    server, target = _up(spec, d / "state", transport=request.param)
    try:
        yield server, target
    finally:
        server.stop()


def _input(row: np.ndarray) -> tc.InferInput:
    item = tc.InferInput("input", [1, 30], "FP32")
    item.set_data_from_numpy(row.reshape(1, 30).astype(np.float32))
    return item


def _version(client: tc.InferenceServerClient, row: np.ndarray, **kwargs: Any) -> str:
    return str(client.infer(MODEL, [_input(row)], **kwargs).get_response().model_version)


def _counts(up: UpServer) -> dict[tuple[str, str], int]:
    return {k: r["requests"] for k, r in traffic_rows(up.status()).items()}


def test_canary_weights_hold_over_grpc_and_accounting_is_exact(
    canary: tuple[UpServer, str], traffic: np.ndarray
) -> None:
    up, target = canary
    assert up.rollout()["weights"] == {"v1": 100 - CANDIDATE_PERCENT, "v2": CANDIDATE_PERCENT}
    before = _counts(up)
    with tc.InferenceServerClient(target) as client:
        seen = Counter(_version(client, traffic[i % len(traffic)]) for i in range(REQUESTS))
    assert set(seen) == {"v1", "v2"}
    assert abs(100.0 * seen["v2"] / REQUESTS - CANDIDATE_PERCENT) <= 5.0, seen  # 3.5 standard deviations
    after = _counts(up)
    assert after[("v1", "stable")] - before.get(("v1", "stable"), 0) == seen["v1"]
    assert after[("v2", "candidate")] - before.get(("v2", "candidate"), 0) == seen["v2"]
    samples = parse_exposition(httpx.get(f"{up.url}/metrics").text)
    assert (
        sample_sum(samples, "ferryman_requests_total", protocol="grpc-raw", route="candidate", code="200")
        >= seen["v2"]
    )
    assert up.rollout()["weights"] == {"v1": 100 - CANDIDATE_PERCENT, "v2": CANDIDATE_PERCENT}


def test_pins_by_model_version_and_by_metadata_bypass_the_split(
    canary: tuple[UpServer, str], traffic: np.ndarray
) -> None:
    up, target = canary
    before = _counts(up)
    with tc.InferenceServerClient(target) as client:
        by_field = [_version(client, traffic[i], model_version="v2") for i in range(20)]
        by_metadata = [_version(client, traffic[i], headers={"x-ferryman-version": "v1"}) for i in range(20)]
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [_input(traffic[0])], headers={"x-ferryman-version": "v9"})
    assert by_field == ["v2"] * 20 and by_metadata == ["v1"] * 20
    assert str(caught.value.status()) == "StatusCode.NOT_FOUND" and "v9" in str(caught.value.message())
    after = _counts(up)
    assert after[("v2", "pinned")] - before.get(("v2", "pinned"), 0) == 20
    assert after[("v1", "pinned")] - before.get(("v1", "pinned"), 0) == 20
    assert after.get(("v2", "candidate"), 0) == before.get(("v2", "candidate"), 0)


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_a_sticky_key_in_metadata_gets_the_arm_rest_gives_it(
    sample_models, traffic: np.ndarray, tmp_path: Path, transport: str
) -> None:
    spec = write_spec(
        tmp_path / "deployment.yaml",
        versions=sample_models.versions,
        traffic={
            "strategy": "abTest",
            "stable": "v1",
            "abTest": {"weights": {"v1": 50, "v2": 50}, "sticky": {"source": "header", "name": "x-user-id"}},
        },
    )
    keys = [f"user-{i}" for i in range(200)]
    up, target = _up(spec, tmp_path / "state", transport=transport)
    try:
        rest = arms_for(up.url, keys, traffic, lambda key: {"headers": {"x-user-id": key}})
        with tc.InferenceServerClient(target) as client:
            over_grpc = {
                k: _version(client, traffic[(n * 7) % len(traffic)], headers={"x-user-id": k})
                for n, k in enumerate(keys)
            }
    finally:
        up.stop()
    assert over_grpc == rest
    assert 0.3 <= Counter(rest.values())["v1"] / len(keys) <= 0.7


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_shadow_copies_of_grpc_requests_run_on_the_candidate(
    sample_models, traffic: np.ndarray, tmp_path: Path, transport: str
) -> None:
    spec = write_spec(
        tmp_path / "deployment.yaml",
        versions=sample_models.versions,
        traffic={"strategy": "shadow", "stable": "v1", "candidate": "v2"},
    )
    up, target = _up(spec, tmp_path / "state", transport=transport)
    try:
        with tc.InferenceServerClient(target) as client:
            answered = Counter(_version(client, traffic[i]) for i in range(40))
        wait_until(
            lambda: traffic_rows(up.status()).get(("v2", "shadow"), {}).get("requests", 0) == 40,
            timeout=30,
            what="40 shadow copies",
            detail=up.status,
        )
        rows = traffic_rows(up.status())
    finally:
        up.stop()
    assert answered == {"v1": 40}  # callers always get stable's answer
    assert rows[("v1", "stable")]["requests"] == 40 and rows[("v2", "shadow")]["errors"] == 0
