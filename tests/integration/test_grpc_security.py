"""gRPC with the REST listener's API keys and TLS: the same key source (``authorization: Bearer`` or
``x-api-key`` metadata, re-read when it changes), health open, UNAUTHENTICATED otherwise; the certificate
re-read when it changes, checked with ``tritonclient.grpc`` over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.helpers import models
from tests.helpers.gateway import wait_until
from tests.helpers.ports import free_port
from tests.helpers.security import Authority, issue_cert, make_ca, write_atomically
from tests.helpers.servers import GRPC_TRANSPORTS

KEY = "grpc-test-key-0123456789"
NEW_KEY = "grpc-rotated-key-9876543210"


@pytest.fixture(scope="module", params=GRPC_TRANSPORTS)
def secured(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    from tests.helpers.security import ferryman_process

    d = tmp_path_factory.mktemp("grpc-security")
    model = models.add_one_model(d / "add_one.onnx")
    keys = d / "keys"
    write_atomically(keys, KEY + "\n")
    ca = make_ca(d / "ca1")
    cert, key = issue_cert(ca)
    write_atomically(d / "tls.crt", cert)
    write_atomically(d / "tls.key", key)
    port, grpc_port = free_port(), free_port()
    args = [
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--api-keys",
        str(keys),
        "--tls-cert",
        str(d / "tls.crt"),
        "--tls-key",
        str(d / "tls.key"),
        "--grpc-transport",
        request.param,
    ]
    with ferryman_process(args, port=port, scheme="https", verify=str(ca.cert_path)) as proc:
        yield {"dir": d, "ca": ca, "keys": keys, "target": f"127.0.0.1:{grpc_port}", "process": proc}


def _client(secured: dict[str, Any], ca: Authority | None = None) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(
        secured["target"], ssl=True, root_certificates=str((ca or secured["ca"]).cert_path)
    )


def _infer(client: tc.InferenceServerClient, headers: dict[str, str] | None = None) -> np.ndarray:
    x = np.array([[1, 2, 3]], np.float32)
    item = tc.InferInput("x", [1, 3], "FP32")
    item.set_data_from_numpy(x)
    out = client.infer("add_one", [item], headers=headers).as_numpy("y")
    assert out is not None
    return out


def _code(call: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def test_api_keys_from_metadata_and_health_stays_open(secured: dict[str, Any]) -> None:
    with _client(secured) as client:
        assert client.is_server_live() and client.is_server_ready()  # probes need no key
        assert _code(lambda: _infer(client)) == "StatusCode.UNAUTHENTICATED"
        assert _code(lambda: client.get_model_metadata("add_one")) == "StatusCode.UNAUTHENTICATED"
        assert (
            _code(lambda: _infer(client, {"authorization": "Bearer wrong-key-000000000"}))
            == "StatusCode.UNAUTHENTICATED"
        )
        np.testing.assert_array_equal(_infer(client, {"authorization": f"Bearer {KEY}"}), [[2, 3, 4]])
        np.testing.assert_array_equal(_infer(client, {"x-api-key": KEY}), [[2, 3, 4]])
        assert client.get_model_metadata("add_one", headers={"x-api-key": KEY}).name == "add_one"


def test_a_rotated_key_file_applies_without_restart(secured: dict[str, Any]) -> None:
    write_atomically(secured["keys"], NEW_KEY + "\n")
    with _client(secured) as client:

        def rotated() -> bool:
            try:
                _infer(client, {"x-api-key": NEW_KEY})
                return True
            except InferenceServerException:
                return False

        wait_until(rotated, timeout=20, what="the new key to be accepted")
        assert _code(lambda: _infer(client, {"x-api-key": KEY})) == "StatusCode.UNAUTHENTICATED"
        write_atomically(secured["keys"], KEY + "\n")

        def restored() -> bool:  # the next test's calls use KEY: wait for the server to re-read the file
            try:
                _infer(client, {"x-api-key": KEY})
                return True
            except InferenceServerException:
                return False

        wait_until(restored, timeout=20, what="the original key to be accepted again")


def test_a_renewed_certificate_serves_new_handshakes(secured: dict[str, Any]) -> None:
    d: Path = secured["dir"]
    other = make_ca(d / "ca2", name="ferryman test CA two")
    with _client(
        secured, other
    ) as stranger:  # signed by the first CA: a client trusting only the second refuses
        assert _code(stranger.is_server_live) == "StatusCode.UNAVAILABLE"
    cert, key = issue_cert(other)
    write_atomically(d / "tls.key", key)
    write_atomically(d / "tls.crt", cert)

    def trusted_by_the_new_ca() -> bool:
        with _client(secured, other) as client:
            try:
                return bool(client.is_server_live())
            except InferenceServerException:
                return False

    wait_until(trusted_by_the_new_ca, timeout=30, what="a handshake with the renewed certificate")
    with _client(secured, other) as client:
        np.testing.assert_array_equal(_infer(client, {"x-api-key": KEY}), [[2, 3, 4]])
