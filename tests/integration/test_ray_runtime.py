"""The Ray Serve runtime for real: one local Ray instance for the module, started by ``start_local``.

(The first tests run the ingress's ASGI app in-process under uvicorn, without Ray: quick, not ``slow``.)

``start_local`` runs ``python -m ferryman_runtimes.ray SPEC --port P`` (the launcher behind
``ferryman up --runtime ray``), which deploys ``serve_config(md)`` through the Serve controller exactly as
KubeRay applies ``serveConfigV2``. v1 is computed inside the ingress replica, v2 through its own batched
deployment (``--dispatch``), so both compute paths answer. The spec is a canary at 30 % with 50 % shadow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml

from ferryman.dataplane import DataPlane, repository_for
from ferryman.protocol import v2
from ferryman.rollout import start
from ferryman.serve_config import route_config, table_from_route_config
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman_runtimes.ray.ingress import RayIngressApp
from ferryman_runtimes.ray.local import LocalRay, start_local
from tests.helpers.models import reference_outputs
from tests.helpers.ports import free_port_below_ephemeral
from tests.helpers.servers import serve_app

MODEL = "breast-cancer"
HL = "inference-header-content-length"
INFER = f"/v2/models/{MODEL}/infer"


def spec_doc(sample_models) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(Path(sample_models.spec).read_text())
    for v in doc["spec"]["versions"]:
        v["uri"] = str(Path(sample_models.directory) / v["uri"])
    doc["spec"]["traffic"]["canary"]["steps"] = [30, 100]
    doc["spec"]["traffic"]["shadow"] = {"percent": 50}
    doc["spec"]["drift"] = {"enabled": False}
    return doc


# -- the ingress app in-process (no Ray) ------------------------------------------------------------
@pytest.fixture(scope="module")
def ingress_md(sample_models) -> ModelDeployment:
    return parse_deployment(spec_doc(sample_models))


@pytest.fixture(scope="module")
def ingress_url(ingress_md: ModelDeployment) -> Iterator[str]:
    md = ingress_md
    table = table_from_route_config(
        md, route_config(md, start(md, now=0.0)[0])
    )  # what reconfigure() installs
    app = RayIngressApp(
        DataPlane(repository_for(md), limits=md.spec.limits), table, remotes={}, inline={"v1", "v2"}
    )
    with serve_app(app) as server:
        yield server.url


def test_ingress_app_answers_both_protocols_and_pins(
    ingress_url: str, sample_models, traffic: np.ndarray
) -> None:
    rows = traffic[:4]
    with httpx.Client(base_url=ingress_url, timeout=30) as c:
        for version in ("v1", "v2"):
            body, _ = v2.encode_request({"input": rows})
            resp = c.post(INFER, content=body, headers={"x-ferryman-version": version})
            assert resp.status_code == 200, resp.text
            doc = v2.decode_response(resp.content)
            assert doc["model_version"] == version
            assert_outputs_equal(doc, expected(sample_models, version, rows))
            resp = c.post(
                f"/v1/models/{MODEL}/versions/{version}:predict",
                content=orjson.dumps({"instances": rows.tolist()}),
            )
            assert resp.status_code == 200, resp.text


def test_ingress_app_splits_by_the_configured_weights(ingress_url: str, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:1]})
    with httpx.Client(base_url=ingress_url, timeout=30) as c:
        seen = Counter(c.post(INFER, content=body).json()["model_version"] for _ in range(500))
    assert 0.22 <= seen["v2"] / 500 <= 0.38, seen


def test_ingress_app_rejects_bad_input(ingress_url: str) -> None:
    resp = httpx.post(ingress_url + INFER, content=b"{", timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]


# -- the runtime on a local Ray instance --------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_server(sample_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRay]:
    spec = tmp_path_factory.mktemp("ray-spec") / "deployment.yaml"
    spec.write_text(yaml.safe_dump(spec_doc(sample_models)))
    server = start_local(
        spec,
        free_port_below_ephemeral(count=2),
        extra_args=["--dispatch", "v1=inline", "--dispatch", "v2=remote"],
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(ray_server: LocalRay) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ray_server.url, timeout=30) as c:
        yield c


def expected(sample_models, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    return reference_outputs(Path(sample_models.versions[version]), {"input": x})


def assert_outputs_equal(doc: dict[str, Any], want: dict[str, np.ndarray]) -> None:
    got = {o["name"]: o for o in doc["outputs"]}
    assert set(got) == set(want)
    for name, arr in want.items():
        assert got[name]["shape"] == list(arr.shape)
        np.testing.assert_allclose(np.asarray(got[name]["data"]).reshape(arr.shape), arr, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v2_json_equals_onnx_runtime(
    client: httpx.Client, sample_models, traffic: np.ndarray, version: str
) -> None:
    rows = traffic[:7]
    body, _ = v2.encode_request({"input": rows})
    resp = client.post(f"/v2/models/{MODEL}/versions/{version}/infer", content=body)
    assert resp.status_code == 200, resp.text
    doc = v2.decode_response(resp.content)
    assert (doc["model_name"], doc["model_version"]) == (MODEL, version)
    assert_outputs_equal(doc, expected(sample_models, version, rows))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v2_binary_equals_onnx_runtime(
    client: httpx.Client, sample_models, traffic: np.ndarray, version: str
) -> None:
    rows = traffic[7:12]
    body, hl = v2.encode_request({"input": rows}, binary=True, binary_output=True)
    resp = client.post(
        f"/v2/models/{MODEL}/versions/{version}/infer",
        content=body,
        headers={HL: str(hl), "content-type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    assert HL in resp.headers
    doc = v2.decode_response(resp.content, header_length=int(resp.headers[HL]))
    assert doc["model_version"] == version
    assert_outputs_equal(doc, expected(sample_models, version, rows))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v1_predict_equals_onnx_runtime(
    client: httpx.Client, sample_models, traffic: np.ndarray, version: str
) -> None:
    rows = traffic[12:16]
    resp = client.post(
        f"/v1/models/{MODEL}/versions/{version}:predict", content=orjson.dumps({"instances": rows.tolist()})
    )
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    want = expected(sample_models, version, rows)
    assert [p["label"] if isinstance(p, dict) else p for p in predictions] == want["label"].tolist()


@pytest.mark.slow
def test_pin_header_selects_the_version(client: httpx.Client, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:1]})
    for version in ("v2", "v1", "v2"):
        resp = client.post(INFER, content=body, headers={"x-ferryman-version": version})
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == version


@pytest.mark.slow
def test_canary_weights_are_observed(client: httpx.Client, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:1]})
    seen: Counter[str] = Counter()
    n = 500
    for _ in range(n):
        resp = client.post(INFER, content=body)
        assert resp.status_code == 200, resp.text
        seen[resp.json()["model_version"]] += 1
    assert set(seen) == {"v1", "v2"}
    share = seen["v2"] / n
    assert 0.22 <= share <= 0.38, seen  # canary step 1 of [30, 100]; 4 standard deviations either side


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        (INFER, b"{not json", 400, "JSON"),
        (
            INFER,
            orjson.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
            ),
            400,
            "dimension 1",
        ),
        (
            INFER,
            orjson.dumps(
                {"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 30], "data": [0] * 30}]}
            ),
            400,
            "nope",
        ),
        (
            f"/v2/models/{MODEL}/versions/v2/infer",
            orjson.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30], "data": [0] * 30}]}
            ),
            400,
            "shape",
        ),
        (f"/v1/models/{MODEL}:predict", orjson.dumps({"instances": [[1, 2]]}), 400, ""),
        ("/v2/models/missing/infer", orjson.dumps({"inputs": []}), 404, "missing"),
        (f"/v2/models/{MODEL}/versions/v9/infer", orjson.dumps({"inputs": []}), 404, "v9"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    client: httpx.Client, path: str, body: bytes, status: int, fragment: str
) -> None:
    resp = client.post(path, content=body)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["error"]


@pytest.mark.slow
def test_unknown_pinned_version_in_header_is_404(client: httpx.Client, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:1]})
    resp = client.post(INFER, content=body, headers={"x-ferryman-version": "v9"})
    assert resp.status_code == 404
    assert "v9" in resp.json()["error"]


@pytest.mark.slow
def test_health_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["versions"] == ["v1", "v2"]
    assert client.get(f"/v1/models/{MODEL}").json()["ready"] is True


@pytest.mark.slow
def test_metrics_cover_ingress_version_replicas_and_shadow(client: httpx.Client, traffic: np.ndarray) -> None:
    body, _ = v2.encode_request({"input": traffic[:2]})
    for _ in range(20):
        assert client.post(INFER, content=body, headers={"x-ferryman-version": "v1"}).status_code == 200
        assert client.post(INFER, content=body, headers={"x-ferryman-version": "v2"}).status_code == 200
    text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)

    def total(prefix: str, **labels: str) -> float:
        return sum(
            v
            for k, v in samples.items()
            if k.startswith(prefix + "{") and all(f'{lk}="{lv}"' in k for lk, lv in labels.items())
        )

    assert total("ferryman_requests_total", version="v1", route="pinned", code="200") >= 20
    assert total("ferryman_requests_total", version="v2", route="pinned", code="200") >= 20
    # batches run in the v2 deployment's own replica, reported through the shared metrics directory
    assert total("ferryman_batch_rows_count", version="v2") >= 1
    assert total("ferryman_batch_rows_sum", version="v2") >= 40
    # the canary's shadow: half of the unpinned v1 answers were mirrored to v2 by now
    assert total("ferryman_requests_total", version="v2", route="shadow") >= 1
    assert samples['ferryman_traffic_weight_ratio{model="breast-cancer",version="v2"}'] == pytest.approx(0.3)
