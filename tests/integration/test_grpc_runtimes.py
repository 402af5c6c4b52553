"""gRPC beyond one process: the KServe-contract runtime (``--grpc_port``, KServe's argument name) and
``ferryman serve --workers 2 --grpc-port``, where every worker listens on the gRPC port (SO_REUSEPORT) and
``/metrics`` counts the gRPC requests of all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc

from tests.helpers import models
from tests.helpers.gateway import wait_until
from tests.helpers.ports import free_port
from tests.helpers.prometheus import parse_exposition, sample_sum
from tests.helpers.servers import GRPC_TRANSPORTS, serve_cli, wait_http

CALLS = 24


def _calls(target: str, model: str) -> list[str]:
    """One new connection per call (so the kernel spreads them over the workers); the versions answering."""
    versions = []
    x = np.array([[1, 2, 3]], np.float32)
    for _ in range(CALLS):
        with tc.InferenceServerClient(target) as client:
            assert client.is_server_ready() and client.is_model_ready(model)
            item = tc.InferInput("x", [1, 3], "FP32")
            item.set_data_from_numpy(x)
            result = client.infer(model, [item])
            np.testing.assert_array_equal(result.as_numpy("y"), [[2, 3, 4]])
            versions.append(result.get_response().model_version)
    return versions


def _grpc_count(url: str) -> float:
    return sample_sum(
        parse_exposition(httpx.get(f"{url}/metrics").text),
        "ferryman_requests_total",
        protocol="grpc-raw",
        code="200",
    )


def _wait_for_count(url: str) -> None:
    """Every worker publishes its counts to the shared directory a moment later (metrics_flush: 0.25 s)."""
    wait_until(lambda: _grpc_count(url) >= CALLS, timeout=30, what=f"{CALLS} gRPC requests in /metrics")
    assert _grpc_count(url) == CALLS


@pytest.fixture(scope="module")
def add_one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.add_one_model(tmp_path_factory.mktemp("grpc-runtimes") / "model.onnx")


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_the_kserve_contract_runtime_serves_grpc_with_two_workers(add_one: Path, transport: str) -> None:
    port, grpc_port = free_port(), free_port()
    args = [
        "-m",
        "ferryman_runtimes.kserve",
        "--model_name=adder",
        f"--model_dir={add_one.parent}",
        "--model_version=7",
        "--host=127.0.0.1",
        f"--http_port={port}",
        f"--grpc_port={grpc_port}",
        "--workers=2",
    ]
    env = {**os.environ, "FERRYMAN_GRPC_TRANSPORT": transport}  # the runtime has KServe's flags only
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/ready", alive=lambda: process.poll() is None)
        assert _calls(f"127.0.0.1:{grpc_port}", "adder") == ["7"] * CALLS
        _wait_for_count(url)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_serve_with_workers_shares_the_grpc_port(add_one: Path, transport: str) -> None:
    grpc_port = free_port()
    args = ["--workers", "2", "--grpc-port", str(grpc_port), "--grpc-transport", transport]
    with serve_cli(add_one, args=args) as server:
        assert _calls(f"127.0.0.1:{grpc_port}", "model") == ["1"] * CALLS
        _wait_for_count(server.url)
