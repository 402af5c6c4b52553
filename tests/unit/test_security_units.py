"""The pure parts of data-plane security (no sockets): key sources and their reload, the key a request
carries, the API-key middleware as an ASGI callable, URI redaction, and the OpenAPI documents' shape and
examples."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferryman import openapi
from ferryman.protocol import v1, v2
from ferryman.signature import Signature, TensorSpec, validate_inputs
from ferryman.spec import Limits
from ferryman.store import redact
from ferryman_runtimes.asgi.limits import limits_of
from ferryman_runtimes.asgi.security import (
    ApiKeyMiddleware,
    ApiKeys,
    KeySourceError,
    parse_key_file,
    supplied_key,
)

K1, K2 = "first-key-0123456789abcdef", "second-key-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_file_format() -> None:
    assert parse_key_file(f"# clients\n  {K1}  \n\n#{K2}\n{K2}\r\n") == [K1, K2]


def test_keys_reload_on_change_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(K1 + "\n")
    clock = Clock()
    keys = ApiKeys(path, check_seconds=5, clock=clock)
    assert keys.accepts(K1.encode()) and not keys.accepts(K2.encode())
    path.write_text(K2 + "\n" + "x" * 10 + "\n")  # a different size: a change even within one mtime tick
    clock.now = 1.0
    assert keys.accepts(K1.encode())  # not re-checked yet: the hot path only compared the clock
    clock.now = 6.0
    assert keys.accepts(K2.encode()) and not keys.accepts(K1.encode())
    assert keys.reloads == 2
    assert len(keys) == 2


def test_an_unreadable_source_keeps_the_last_keys_and_an_empty_one_revokes_all(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(K1)
    keys = ApiKeys(path, check_seconds=0)
    path.unlink()  # mid-rotation, or a broken mount
    assert keys.accepts(K1.encode())
    path.write_text("# nobody\n")
    assert not keys.accepts(K1.encode())
    assert not keys.accepts(b"")


def test_a_secret_directory_one_file_per_key(tmp_path: Path) -> None:
    data = tmp_path / "..2026_01_01"
    data.mkdir()
    (data / "client-a").write_text(K1 + "\n")
    os.symlink(data.name, tmp_path / "..data")
    os.symlink("..data/client-a", tmp_path / "client-a")
    keys = ApiKeys(tmp_path, check_seconds=0)
    assert keys.accepts(K1.encode())
    assert len(keys) == 1  # the ..data plumbing is not a key


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="cannot read API keys"):
        ApiKeys(tmp_path / "absent")


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", f"Bearer {K1}".encode())], K1.encode()),
        ([(b"Authorization", f"bearer   {K1} ".encode())], K1.encode()),
        ([(b"x-api-key", K1.encode())], K1.encode()),
        ([(b"authorization", f"Basic {K1}".encode())], b""),
        ([(b"authorization", b"Bearer")], b""),
        ([], b""),
    ],
)
def test_the_key_a_request_carries(headers: list[tuple[bytes, bytes]], key: bytes) -> None:
    assert supplied_key(headers) == key


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": headers}, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), sent[1]["body"]


def test_middleware_guards_everything_but_probes_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(K1)

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    app = ApiKeyMiddleware(inner, keys=ApiKeys(path))
    status, headers, body = asyncio.run(_call(app, "/v2/models/m/infer", []))
    assert status == 401 and b"www-authenticate" in headers
    assert "API key" in orjson.loads(body)["error"]
    assert asyncio.run(_call(app, "/v2/models/m/infer", [(b"x-api-key", K1.encode())]))[0] == 200
    for open_path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/readyz", "/metrics"):
        assert asyncio.run(_call(app, open_path, []))[0] == 200
    assert asyncio.run(_call(app, "/metrics/../v2", []))[0] == 401  # exact paths only
    assert app.refused == 2


def test_limits_are_found_through_wrappers() -> None:
    class Inner:
        limits = Limits(request_timeout_seconds=3)

    class Wrapper:
        def __init__(self, app: Any) -> None:
            self.app = app

    found = limits_of(Wrapper(Wrapper(Inner())))
    assert found is not None and found.request_timeout_seconds == 3
    assert limits_of(object()) is None


def test_redact_hides_user_info_and_query_values() -> None:
    assert redact("https://user:secret@host/m.onnx") == "https://***@host/m.onnx"
    signed = redact("https://b.s3.amazonaws.com/m.onnx?X-Amz-Credential=AKIA&X-Amz-Signature=abc123#x")
    assert signed == "https://b.s3.amazonaws.com/m.onnx?X-Amz-Credential=***&X-Amz-Signature=***"
    assert redact("https://h/m.onnx?sv=1&sig=s3cr3t") == "https://h/m.onnx?sv=***&sig=***"
    assert redact("s3://bucket/key.onnx") == "s3://bucket/key.onnx"
    assert redact("/models/a@b?.onnx") == "/models/a@b?.onnx"  # a plain path is not a URI


SIG = Signature(
    inputs=(TensorSpec("input", "FP32", (None, 30)),),
    outputs=(TensorSpec("label", "INT64", (None,)), TensorSpec("probabilities", "FP32", (None, 2))),
)
TWO = Signature(
    inputs=(TensorSpec("a", "INT64", (None, 2)), TensorSpec("text", "BYTES", (None,))),
    outputs=(TensorSpec("y", "FP32", (None,)),),
)


def _doc(sig: Signature, **kwargs: Any) -> dict[str, Any]:
    model = openapi.ModelDoc(
        versions=["v1", "v2"],
        inputs=[t.to_v2() for t in sig.inputs],
        outputs=[t.to_v2() for t in sig.outputs],
    )
    return openapi.document(models={"m": model}, **kwargs)


@pytest.mark.parametrize("sig", [SIG, TWO])
def test_openapi_examples_are_valid_requests_for_the_model(sig: Signature) -> None:
    doc = _doc(sig)
    v2_example = doc["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    request = v2.decode_request(orjson.dumps(v2_example["example"]))
    validate_inputs(sig, request.inputs)
    v1_example = doc["paths"]["/v1/models/{model}:predict"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    validate_inputs(sig, v1.decode_request(orjson.dumps(v1_example["example"]), sig).inputs)


def test_openapi_document_shape() -> None:
    doc = _doc(SIG)
    assert doc["openapi"].startswith("3.0")
    assert doc["info"]["title"] == "ferryman runtime"
    infer = doc["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]
    params = {p["name"]: p for p in infer["parameters"]}
    assert params["model"]["schema"]["enum"] == ["m"]
    assert params["version"]["schema"]["enum"] == ["v1", "v2"]
    assert set(infer["responses"]) == {"200", "400", "404", "408", "413", "503"}
    assert "Retry-After" in infer["responses"]["503"]["headers"]
    assert infer["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "security" not in doc and "/metrics" in doc["paths"]
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))

    gateway = _doc(
        SIG, kind="gateway", route_headers=["x-ferryman-version", "x-user-id"], api_keys=True, metrics=False
    )
    assert gateway["info"]["title"] == "ferryman gateway"
    unpinned = {p["name"] for p in gateway["paths"]["/v2/models/{model}/infer"]["post"]["parameters"]}
    assert {"x-ferryman-version", "x-user-id"} <= unpinned
    pinned = {
        p["name"]
        for p in gateway["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]["parameters"]
    }
    assert "x-ferryman-version" not in pinned  # the path already pins
    assert gateway["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in gateway["paths"]["/v2"]["get"]["responses"]
    assert "/metrics" not in gateway["paths"]
    with pytest.raises(ValueError, match="kind"):
        openapi.document(kind="admin")
