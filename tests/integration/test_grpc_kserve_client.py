"""The KServe SDK's gRPC client (``kserve.InferenceGRPCClient``) against ``ferryman serve --grpc-port`` and
the KServe-contract runtime's ``--grpc_port``: health, raw and typed contents giving ONNX Runtime's own
outputs, a pin by ``model_version``, and ``INVALID_ARGUMENT`` / ``NOT_FOUND`` as ``grpc.RpcError``.

The SDK runs in its own interpreter: kserve's v2 gRPC stubs and tritonclient's (which the other gRPC tests
load into this process) declare the same protobuf symbols of package ``inference`` in the default descriptor
pool, so one process cannot import both. The rows and the expected outputs travel as .npy files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port
from tests.helpers.servers import GRPC_TRANSPORTS, serve_cli, wait_http

MODEL = "breast-cancer"

SCENARIO = """
import asyncio
import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

TARGET, MODEL, VERSION, DIR = {target!r}, {model!r}, {version!r}, {dir!r}
rows = np.load(DIR + "/rows.npy")
want = {{"label": np.load(DIR + "/label.npy"), "probabilities": np.load(DIR + "/probabilities.npy")}}


def request(binary, **kwargs):
    item = InferInput(name="input", shape=list(rows.shape), datatype="FP32")
    item.set_data_from_numpy(rows, binary_data=binary)
    return InferRequest(model_name=MODEL, infer_inputs=[item], **kwargs)


async def status(client, infer_request):
    try:
        await client.infer(infer_request)
    except grpc.RpcError as err:
        return err.code(), err.details()
    raise AssertionError("no error")


async def scenario():
    async with InferenceGRPCClient(TARGET, timeout=30, retries=0) as client:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready(MODEL)
        for binary in (True, False):  # raw_input_contents, then typed fp32_contents
            result = await client.infer(request(binary, request_id=f"sdk-{{binary}}"))
            assert (result.model_name, result.model_version, result.id) == (MODEL, VERSION, f"sdk-{{binary}}")
            got = {{o.name: o.as_numpy() for o in result.outputs}}
            np.testing.assert_array_equal(got["label"].reshape(want["label"].shape), want["label"])
            np.testing.assert_allclose(got["probabilities"].reshape(want["probabilities"].shape),
                                       want["probabilities"], rtol=1e-6)
        pinned = await client.infer(request(True, model_version=VERSION))
        assert pinned.model_version == VERSION
        wrong = InferInput(name="inputs", shape=list(rows.shape), datatype="FP32")
        wrong.set_data_from_numpy(rows)
        code, message = await status(client, InferRequest(model_name=MODEL, infer_inputs=[wrong]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "inputs" in message, (code, message)
        code, message = await status(client, request(True, model_version="v9"))
        assert code == grpc.StatusCode.NOT_FOUND and "v9" in message, (code, message)
    print("ok")


asyncio.run(scenario())
"""


def _run_scenario(target: str, version: str, sample_models, rows: np.ndarray, tmp_path: Path) -> None:
    want = reference_outputs(Path(sample_models.versions[version]), {"input": rows})
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "label.npy", want["label"])
    np.save(tmp_path / "probabilities.npy", want["probabilities"])
    script = SCENARIO.format(target=target, model=MODEL, version=version, dir=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.strip() == "ok", result.stdout


@pytest.fixture(scope="module")
def rows(traffic: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(traffic[:9], dtype=np.float32)


@pytest.mark.parametrize("transport", GRPC_TRANSPORTS)
def test_kserve_grpc_client_against_ferryman_serve(
    sample_spec: Path, sample_models, rows: np.ndarray, tmp_path: Path, transport: str
) -> None:
    port = free_port()
    with serve_cli(sample_spec, args=["--grpc-port", str(port), "--grpc-transport", transport]):
        _run_scenario(f"127.0.0.1:{port}", "v1", sample_models, rows, tmp_path)


@pytest.fixture(scope="module", params=GRPC_TRANSPORTS)
def kserve_runtime(sample_models, request: pytest.FixtureRequest) -> Iterator[str]:
    port, grpc_port = free_port(), free_port()
    args = [
        "-m",
        "ferryman_runtimes.kserve",
        f"--model_name={MODEL}",
        f"--model_dir={sample_models.versions['v2']}",
        "--model_version=v2",
        "--host=127.0.0.1",
        f"--http_port={port}",
        f"--grpc_port={grpc_port}",
    ]
    env = {**os.environ, "FERRYMAN_GRPC_TRANSPORT": request.param}  # the runtime has KServe's flags only
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", alive=lambda: process.poll() is None)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_kserve_grpc_client_against_the_kserve_contract_runtime(
    kserve_runtime: str, sample_models, rows: np.ndarray, tmp_path: Path
) -> None:
    _run_scenario(kserve_runtime, "v2", sample_models, rows, tmp_path)
