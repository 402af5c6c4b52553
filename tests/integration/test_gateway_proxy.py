"""`ferryman gateway`: the cluster gateway routing by an operator-written routes.json to per-version servers.

Real processes only: one `ferryman serve` per version (single-version specs, as the operator deploys
them), the gateway reading a routes file, httpx clients. The routes file is rewritten while traffic flows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from ferryman.protocol.v2 import decode_response, encode_request
from ferryman.routes import table_to_dict
from ferryman.routing import initial_table
from ferryman.spec import load_deployment
from tests.helpers.ports import free_port
from tests.helpers.security import ferryman_process
from tests.helpers.servers import serve_cli, wait_http

MODEL = "breast-cancer"


def _single_version_spec(spec: Path, version: str, out: Path) -> Path:
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["versions"] = [v for v in doc["spec"]["versions"] if v["name"] == version]
    for v in doc["spec"]["versions"]:
        v["uri"] = str((spec.parent / v["uri"]).resolve())
        v.pop("referenceData", None)
    doc["spec"]["traffic"] = {"strategy": "static", "stable": version}
    doc["spec"]["drift"] = {"enabled": False}
    path = out / f"{version}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _write_routes(
    path: Path,
    spec: Path,
    *,
    weights: dict[str, int],
    backends: dict[str, str],
    shadow_percent: float | None = None,
) -> None:
    md = load_deployment(spec)
    table = initial_table(md, weights=weights)
    doc = table_to_dict(table, backends=backends)
    if shadow_percent is not None:
        doc["shadow"] = {"version": "v2", "percent": shadow_percent}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # kubelet swaps ConfigMap volumes atomically too


@pytest.fixture(scope="module")
def topology(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("proxy")
    specs = {v: _single_version_spec(sample_spec, v, work) for v in ("v1", "v2")}
    with serve_cli(specs["v1"]) as v1, serve_cli(specs["v2"]) as v2:
        backends = {"v1": v1.url, "v2": v2.url}
        routes = work / "routes.json"
        _write_routes(routes, sample_spec, weights={"v1": 70, "v2": 30}, backends=backends)
        port = free_port()
        with ferryman_process(
            ["gateway", "--routes", str(routes), "--host", "127.0.0.1", "--port", str(port)], port=port
        ) as gw:
            yield {"url": gw.url, "routes": routes, "backends": backends, "spec": sample_spec, "gw": gw}


def _versions(client: httpx.Client, url: str, rows: np.ndarray, n: int, **kw) -> Counter[str]:
    seen: Counter[str] = Counter()
    body, _ = encode_request({"input": rows[:1]})
    for _ in range(n):
        r = client.post(f"{url}/v2/models/{MODEL}/infer", content=body, **kw)
        assert r.status_code == 200, r.text
        seen[r.json()["model_version"]] += 1
    return seen


def test_weighted_split_pins_and_protocols(topology, traffic: np.ndarray) -> None:
    url = topology["url"]
    with httpx.Client(timeout=10) as client:
        seen = _versions(client, url, traffic, 1000)
        assert abs(seen["v1"] / 1000 - 0.70) < 0.06, seen
        assert seen["v2"] > 0
        # pins by path and by header reach exactly that version
        body, _ = encode_request({"input": traffic[:2]})
        r = client.post(f"{url}/v2/models/{MODEL}/versions/v2/infer", content=body)
        assert r.status_code == 200 and r.json()["model_version"] == "v2"
        assert _versions(client, url, traffic, 20, headers={"x-ferryman-version": "v1"}) == Counter(
            {"v1": 20}
        )
        # v2 binary passes through unchanged, both ways
        body, hl = encode_request({"input": traffic[:3]}, binary=True, binary_output=True)
        r = client.post(
            f"{url}/v2/models/{MODEL}/infer",
            content=body,
            headers={"inference-header-content-length": str(hl)},
        )
        assert r.status_code == 200
        doc = decode_response(r.content, header_length=int(r.headers["inference-header-content-length"]))
        assert doc["outputs"][1]["data"].shape == (3, 2)
        # KServe v1
        r = client.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": traffic[:2].tolist()})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2


def test_errors_are_4xx_and_named(topology, traffic: np.ndarray) -> None:
    url = topology["url"]
    with httpx.Client(timeout=10) as client:
        assert client.post(f"{url}/v2/models/other/infer", content=b"{}").status_code == 404
        assert client.post(f"{url}/v2/models/{MODEL}/versions/v9/infer", content=b"{}").status_code == 404
        r = client.post(f"{url}/v2/models/{MODEL}/infer", content=b"{bad json")
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]  # the backend's own answer
        wrong = client.get(f"{url}/v2/models/{MODEL}/infer")  # the backend's 405, with its Allow header
        assert (wrong.status_code, wrong.headers.get("allow")) == (405, "POST"), wrong.text
        assert client.get(f"{url}/v2/health/ready").status_code == 200
        metrics = client.get(f"{url}/metrics").text
        assert "ferryman_requests_total{" in metrics


def test_routes_file_changes_take_effect_and_bad_files_are_ignored(topology, traffic: np.ndarray) -> None:
    url, routes = topology["url"], topology["routes"]
    with httpx.Client(timeout=10) as client:
        try:
            _write_routes(routes, topology["spec"], weights={"v2": 100}, backends=topology["backends"])
            deadline_ok = False
            for _ in range(60):
                if _versions(client, url, traffic, 10) == Counter({"v2": 10}):
                    deadline_ok = True
                    break
                wait_http(url + "/v2/health/live", timeout=1)
            assert deadline_ok, "the gateway never picked up the new routes"
            routes.write_text("{ not json")  # a broken file keeps the last good table
            import time

            time.sleep(2.5)
            assert _versions(client, url, traffic, 20) == Counter({"v2": 20})
        finally:
            _write_routes(
                routes, topology["spec"], weights={"v1": 70, "v2": 30}, backends=topology["backends"]
            )


def test_backend_down_is_503_not_500(sample_spec: Path, tmp_path: Path, traffic: np.ndarray) -> None:
    routes = tmp_path / "routes.json"
    dead = f"http://127.0.0.1:{free_port()}"
    specs = {"v1": _single_version_spec(sample_spec, "v1", tmp_path)}
    with serve_cli(specs["v1"]) as v1:
        _write_routes(
            routes,
            sample_spec,
            weights={"v1": 100},
            backends={"v1": v1.url, "v2": dead},
            shadow_percent=100.0,
        )
        port = free_port()
        with (
            ferryman_process(
                [
                    "gateway",
                    "--routes",
                    str(routes),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-metrics",
                ],
                port=port,
            ) as gw,
            httpx.Client(timeout=10) as client,
        ):
            # the shadow target is down: callers never notice
            assert _versions(client, gw.url, traffic, 30) == Counter({"v1": 30})
            body, _ = encode_request({"input": traffic[:1]})
            r = client.post(f"{gw.url}/v2/models/{MODEL}/versions/v2/infer", content=body)
            assert r.status_code == 503 and "unavailable" in r.json()["error"]


def test_a_connection_broken_before_the_answer_is_retried_once(
    sample_spec: Path, tmp_path: Path, traffic: np.ndarray
) -> None:
    """A version server that closes a connection without answering (a pod stopping while the gateway reuses
    its pooled connection) costs the caller nothing: the gateway sends the prediction again on a new
    connection. Only when the retry breaks too does the caller get a 503."""
    import socket
    import threading

    answered = b'{"model_name": "breast-cancer", "model_version": "v1", "outputs": []}'
    broken = {"left": 1}

    def serve(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if broken["left"] > 0:  # read the request, then hang up without a byte of answer
                    broken["left"] -= 1
                    continue
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(answered), answered)
                )

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    routes = tmp_path / "routes.json"
    _write_routes(
        routes,
        sample_spec,
        weights={"v1": 100},
        backends={"v1": f"http://127.0.0.1:{listener.getsockname()[1]}"},
    )
    port = free_port()
    body, _ = encode_request({"input": traffic[:1]})
    try:
        with (
            ferryman_process(
                [
                    "gateway",
                    "--routes",
                    str(routes),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-metrics",
                ],
                port=port,
            ) as gw,
            httpx.Client(timeout=10) as client,
        ):
            r = client.post(f"{gw.url}/v2/models/{MODEL}/infer", content=body)
            assert r.status_code == 200 and r.json()["model_version"] == "v1", r.text
            assert broken["left"] == 0  # the first attempt really was hung up on
            broken["left"] = 2  # the retry breaks too: the caller is told, with a 503
            r = client.post(f"{gw.url}/v2/models/{MODEL}/infer", content=body)
            assert r.status_code == 503 and "unavailable" in r.json()["error"], r.text
    finally:
        listener.close()
