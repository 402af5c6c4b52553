"""Security of the data plane against real processes: API keys, TLS, request limits, and what reaches the log.

* ``ferryman serve --api-keys FILE`` (plain HTTP, tight limits): no key / a wrong key → 401 with
  ``WWW-Authenticate``, the right key (``Authorization: Bearer`` or ``X-API-Key``) → 200, probes and metrics
  open; the key file edited in place or replaced → the new key works and the old one stops, same process.
  Limits: 413 (body), 408 (a body or headers trickled slower than the request timeout), 431/414 (huge
  headers / request target), 503 + Retry-After beyond ``maxInFlight``; the server keeps answering after each.
  Its log never holds a key or a payload.
* ``ferryman serve --api-keys SECRET_DIR --tls-cert --tls-key``: keys from a directory laid out like a
  mounted Secret, rotated the kubelet's way; HTTPS verified against the test CA; a key that no longer
  matches its certificate is refused (old certificate kept); new cert files are served without a restart.
* ``ferryman up --api-keys --tls-cert --tls-key``: the gateway over HTTPS with keys; the admin API unchanged.
* A model URI with a password and a pre-signed query: the load error names the version, both secrets masked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml

from tests.helpers.gateway import wait_until
from tests.helpers.ports import free_port
from tests.helpers.security import (
    Authority,
    Process,
    client_context,
    ferryman_process,
    issue_cert,
    make_ca,
    pem_fingerprint,
    raw_exchange,
    rotate_secret,
    secret_dir,
    served_fingerprint,
    status_of,
    write_atomically,
)
from tests.helpers.servers import run_ferryman

MODEL = "breast-cancer"
INFER = f"/v2/models/{MODEL}/infer"
PREDICT = f"/v1/models/{MODEL}:predict"
TIMEOUT_S = 2
MAX_BODY = 4096
KEY_1 = "key-one-" + "a1b2c3d4e5f6a7b8c9d0"
KEY_2 = "key-two-" + "0f9e8d7c6b5a4f3e2d1c"
KEY_3 = "key-three-" + "1122334455667788aabb"
MARKER = 1234.5678125  # a payload value that must never reach the log
NAME_MARKER = "payload-marker-not-for-logs"


def spec(
    path: Path,
    versions: dict[str, Path],
    *,
    limits: dict[str, Any] | None = None,
    traffic: dict[str, Any] | None = None,
) -> Path:
    doc = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "versions": [{"name": v, "uri": str(p)} for v, p in versions.items()],
            "traffic": traffic or {"strategy": "static"},
            "drift": {"enabled": False},
            "limits": limits or {},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def row_body(value: float = 0.5) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [value] * 30}]}
    )


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# -- API keys from a file, and the limits -------------------------------------------------------------------
@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(f"# prediction clients\n{KEY_1}\n\n")
    return path


@pytest.fixture(scope="module")
def keyed(sample_models: Any, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    d = tmp_path_factory.mktemp("keyed")
    target = spec(
        d / "deployment.yaml",
        {"v1": Path(sample_models.versions["v1"])},
        limits={"maxBodyBytes": MAX_BODY, "requestTimeoutSeconds": TIMEOUT_S, "maxInFlight": 1},
    )
    port = free_port()
    with ferryman_process(
        ["serve", str(target), "--host", "127.0.0.1", "--port", str(port), "--api-keys", str(key_file)],
        port=port,
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(keyed: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed.url, timeout=30) as c:
        yield c


def test_prediction_needs_a_valid_key(client: httpx.Client) -> None:
    for headers in (
        {},
        bearer("wrong-key-" + "x" * 20),
        {"x-api-key": "nope"},
        {"authorization": f"Basic {KEY_1}"},
        {"authorization": f"Bearer {KEY_1}x"},
        {"authorization": "Bearer"},
    ):
        resp = client.post(INFER, content=row_body(), headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in resp.json()["error"]
    for headers in (bearer(KEY_1), {"x-api-key": KEY_1}, {"Authorization": f"bearer  {KEY_1}"}):
        resp = client.post(INFER, content=row_body(), headers=headers)
        assert resp.status_code == 200, (headers, resp.text)
        assert resp.json()["model_version"] == "v1"
    resp = client.post(PREDICT, json={"instances": [[0.5] * 30]}, headers={"x-api-key": KEY_1})
    assert resp.status_code == 200, resp.text
    assert client.post(PREDICT, json={"instances": [[0.5] * 30]}).status_code == 401


def test_probes_and_metrics_are_open_everything_else_is_not(client: httpx.Client) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    for path in ("/v2", f"/v2/models/{MODEL}", "/v1/models", "/openapi.json", "/no-such-route"):
        assert client.get(path).status_code == 401, path
    doc = client.get("/openapi.json", headers=bearer(KEY_1)).json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert doc["paths"]["/v2/health/ready"]["get"]["security"] == []
    assert "401" in doc["paths"]["/v2/models/{model}/infer"]["post"]["responses"]


def _accepted(client: httpx.Client, key: str) -> bool:
    status = client.post(INFER, content=row_body(), headers=bearer(key)).status_code
    assert status in (200, 401), status
    return status == 200


def test_key_file_changes_apply_without_restart(client: httpx.Client, keyed: Process, key_file: Path) -> None:
    pid = keyed.process.pid
    try:
        with key_file.open("w") as f:  # edited in place, like an editor that truncates and writes
            f.write(f"{KEY_2}\n")
        wait_until(lambda: _accepted(client, KEY_2), timeout=20, what="the new key to be accepted")
        assert not _accepted(client, KEY_1)
        write_atomically(key_file, f"{KEY_1}\n# rotated\n{KEY_3}\n")  # replaced, like a config tool
        wait_until(lambda: _accepted(client, KEY_3), timeout=20, what="the replaced file's keys")
        assert _accepted(client, KEY_1)
        assert not _accepted(client, KEY_2)
        assert keyed.process.pid == pid and keyed.alive()
    finally:
        write_atomically(key_file, f"{KEY_1}\n")
        wait_until(lambda: not _accepted(client, KEY_3), timeout=20, what="the original key file")


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    big = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [20, 30], "datatype": "FP32", "data": [0.123456] * 600}]}
    )
    assert len(big) > MAX_BODY
    resp = client.post(INFER, content=big, headers=bearer(KEY_1))
    assert resp.status_code == 413
    assert f"{MAX_BODY}" in resp.json()["error"]
    assert client.post(INFER, content=row_body(), headers=bearer(KEY_1)).status_code == 200


def _request_head(path: str, *, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY_1}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_a_trickled_body_gets_408_and_frees_its_slot(client: httpx.Client, keyed: Process) -> None:
    body = row_body()
    answer = raw_exchange(
        keyed.port, _request_head(INFER, length=len(body)) + body[:20], trickle=body[20:], trickle_every=0.25
    )
    assert status_of(answer) == 408, answer[:300]
    assert b"connection: close" in answer.lower()
    assert b"request body not received within" in answer
    assert client.post(INFER, content=body, headers=bearer(KEY_1)).status_code == 200


def test_trickled_headers_get_408(keyed: Process) -> None:
    head = _request_head(INFER, length=10)
    answer = raw_exchange(keyed.port, head[:30], trickle=head[30:] * 4, trickle_every=0.25)
    assert status_of(answer) == 408, answer[:300]
    assert b"request headers not received" in answer


def test_huge_headers_get_431_and_a_huge_target_414(client: httpx.Client, keyed: Process) -> None:
    one_big = _request_head(INFER, length=0, extra=f"X-Padding: {'p' * 100_000}\r\n")
    many = _request_head(INFER, length=0, extra="".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(1000)))
    for data in (one_big, many):
        answer = raw_exchange(keyed.port, data)
        assert status_of(answer) == 431, answer[:300]
        assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("request headers exceed")
    answer = raw_exchange(keyed.port, f"GET /v2/{'x' * 40_000} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert status_of(answer) == 414, answer[:300]
    # ordinary headers, a few kilobytes of them, are fine
    resp = client.post(INFER, content=row_body(), headers={**bearer(KEY_1), "x-trace": "t" * 4000})
    assert resp.status_code == 200


def test_beyond_max_in_flight_is_503_with_retry_after(client: httpx.Client, keyed: Process) -> None:
    """maxInFlight is 1: a request whose body is still arriving holds the only slot."""
    import socket

    body = row_body()
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=30) as holder:
        holder.sendall(_request_head(INFER, length=len(body)) + body[:10])
        answers = []
        for _ in range(50):  # bounded: the holder reaches the app within a few attempts
            resp = client.post(INFER, content=body, headers=bearer(KEY_1))
            answers.append(resp.status_code)
            if resp.status_code == 503:
                break
            time.sleep(0.02)
        assert answers[-1] == 503, answers
        assert int(resp.headers["retry-after"]) >= 1
        assert "in flight" in resp.json()["error"]
        holder.sendall(body[10:])  # the held request completes normally
        holder.settimeout(30)
        assert holder.recv(65536).startswith(b"HTTP/1.1 200")
    assert client.post(INFER, content=body, headers=bearer(KEY_1)).status_code == 200


def test_the_log_holds_no_key_and_no_payload(client: httpx.Client, keyed: Process) -> None:
    marker_body = row_body(MARKER)
    assert client.post(INFER, content=marker_body, headers=bearer(KEY_1)).status_code == 200
    bad = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [NAME_MARKER] * 30}]}
    )
    assert client.post(INFER, content=bad, headers=bearer(KEY_1)).status_code == 400
    assert (
        client.post(INFER, content=b'{"inputs": [' + NAME_MARKER.encode(), headers=bearer(KEY_1)).status_code
        == 400
    )
    assert client.post(INFER, content=marker_body, headers=bearer(NAME_MARKER)).status_code == 401
    output = keyed.output()
    assert "loaded 1 API key(s)" in output  # the log is live (and says how many keys, never which)
    for secret in (KEY_1, KEY_2, KEY_3, NAME_MARKER, str(MARKER), "1234.567"):
        assert secret not in output, secret
    assert "Traceback" not in output


# -- a Secret directory and TLS -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca(d)
    cert, key = issue_cert(ca)
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    return ca, d / "tls.crt", d / "tls.key"


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return secret_dir(tmp_path_factory.mktemp("secret") / "api-keys", {"client-a": KEY_1 + "\n"})


@pytest.fixture(scope="module")
def tls_server(
    sample_models: Any,
    pki: tuple[Authority, Path, Path],
    secret: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Process]:
    ca, cert, key = pki
    target = spec(
        tmp_path_factory.mktemp("tls-serve") / "deployment.yaml", {"v1": Path(sample_models.versions["v1"])}
    )
    port = free_port()
    with ferryman_process(
        [
            "serve",
            str(target),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-keys",
            str(secret),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        port=port,
        scheme="https",
        verify=client_context(ca),
    ) as proc:
        yield proc


def test_https_with_a_secret_dir_of_keys(
    tls_server: Process, pki: tuple[Authority, Path, Path], secret: Path
) -> None:
    ca = pki[0]
    with httpx.Client(base_url=tls_server.url, verify=client_context(ca), timeout=30) as c:
        assert c.post(INFER, content=row_body(), headers=bearer(KEY_1)).status_code == 200
        assert c.post(INFER, content=row_body()).status_code == 401
        rotate_secret(secret, {"client-b": KEY_2, "client-c": KEY_3})

        def rotated() -> bool:
            return c.post(INFER, content=row_body(), headers={"x-api-key": KEY_2}).status_code == 200

        wait_until(rotated, timeout=20, what="the rotated Secret's key")
        assert c.post(INFER, content=row_body(), headers=bearer(KEY_3)).status_code == 200
        assert c.post(INFER, content=row_body(), headers=bearer(KEY_1)).status_code == 401
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(tls_server.url + "/v2/health/live", timeout=10)
    with pytest.raises(httpx.TransportError):  # no plaintext on the TLS port
        httpx.get(tls_server.url.replace("https", "http") + "/v2/health/live", timeout=10)


def test_certificate_files_are_reloaded_without_restart(
    tls_server: Process, pki: tuple[Authority, Path, Path]
) -> None:
    ca, cert_path, key_path = pki
    old = served_fingerprint(tls_server.port)
    assert old == pem_fingerprint(cert_path.read_bytes())
    new_cert, new_key = issue_cert(ca)
    # the key first: it no longer matches the served certificate, so nothing changes yet
    write_atomically(key_path, new_key)
    wait_until(
        lambda: "cannot be loaded" in tls_server.output(), timeout=20, what="the mismatch to be reported"
    )
    assert served_fingerprint(tls_server.port) == old
    with httpx.Client(verify=client_context(ca), timeout=30) as c:
        assert c.get(tls_server.url + "/v2/health/ready").status_code == 200
    write_atomically(cert_path, new_cert)
    wait_until(
        lambda: served_fingerprint(tls_server.port) == pem_fingerprint(new_cert),
        timeout=20,
        what="the new certificate to be served",
    )
    with httpx.Client(base_url=tls_server.url, verify=client_context(ca), timeout=30) as c:
        assert c.get("/v2/health/ready").status_code == 200
    assert tls_server.alive()
    assert "TLS certificate reloaded" in tls_server.output()


# -- the gateway: ferryman up with TLS and keys -------------------------------------------------------------
def test_gateway_over_https_with_keys(
    sample_models: Any, pki: tuple[Authority, Path, Path], tmp_path: Path
) -> None:
    ca, cert, key = pki
    keys = tmp_path / "keys"
    keys.write_text(KEY_1 + "\n")
    target = spec(
        tmp_path / "deployment.yaml",
        {"v1": Path(sample_models.versions["v1"]), "v2": Path(sample_models.versions["v2"])},
        traffic={
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {"steps": [50, 100], "intervalSeconds": 3600},
        },
    )
    port, admin_port = free_port(), free_port()
    state = tmp_path / "state"
    args = [
        "up",
        str(target),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        "--state-dir",
        str(state),
        "--api-keys",
        str(keys),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    with (
        ferryman_process(args, port=port, scheme="https", verify=client_context(ca)) as up,
        httpx.Client(base_url=up.url, verify=client_context(ca), timeout=30) as c,
    ):
        assert c.post(INFER, content=row_body()).status_code == 401
        versions = set()
        for _ in range(40):
            resp = c.post(INFER, content=row_body(float(np.float32(0.25))), headers=bearer(KEY_1))
            assert resp.status_code == 200, resp.text
            versions.add(resp.json()["model_version"])
        assert versions <= {"v1", "v2"} and versions
        pinned = c.post(INFER, content=row_body(), headers={**bearer(KEY_1), "x-ferryman-version": "v2"})
        assert pinned.json()["model_version"] == "v2"
        doc = c.get("/openapi.json", headers=bearer(KEY_1)).json()
        assert doc["info"]["title"] == "ferryman gateway"
        assert "apiKey" in doc["components"]["securitySchemes"]
        # the admin API keeps its own listener and token: an API key is not an admin credential
        token = orjson.loads((state / "token.json").read_bytes())["token"]
        admin = f"http://127.0.0.1:{admin_port}"
        assert httpx.get(admin + "/status", headers=bearer(KEY_1), timeout=10).status_code == 401
        assert httpx.get(admin + "/status", headers=bearer(token), timeout=10).status_code == 200
        info = orjson.loads((state / "admin.json").read_bytes())
        assert info["gateway"].startswith("https://")
        output = up.output()
        assert KEY_1 not in output and token not in output
    assert os.path.exists(state / f"{MODEL}.rollout.json")


def test_model_uri_credentials_never_reach_the_output(tmp_path: Path) -> None:
    """A version whose URI carries a password and a pre-signed query fails to load: the error says which
    version and where, with both secrets masked."""
    port = free_port()  # nothing listens there: the download fails
    uri = f"http://reader:pa55-not-for-logs@127.0.0.1:{port}/models/m.onnx?X-Amz-Signature=sig-not-for-logs"
    target = tmp_path / "deployment.yaml"
    target.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.ferryman.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": MODEL},
                "spec": {"versions": [{"name": "v1", "uri": uri}], "drift": {"enabled": False}},
            }
        )
    )
    result = run_ferryman(
        ["-v", "serve", str(target), "--port", str(free_port())],
        env={"FERRYMAN_MODEL_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'v1'" in output and "***@127.0.0.1" in output and "X-Amz-Signature=***" in output, output
    assert "pa55-not-for-logs" not in output and "sig-not-for-logs" not in output
