"""Fuzz the served OpenAPI documents of a real ``ferryman serve`` and a real ``ferryman up`` with
schemathesis.

For every operation, schemathesis generates schema-valid requests (positive) and schema-violating ones
(negative: wrong types, missing fields, bad headers, random binary bodies) — the ``model``/``version``
parameters are enumerations of what is loaded, so inference itself is exercised. Every answer must be
below 500, documented (status code, content type, body schema), and the server must stay up and healthy.
The number of examples is bounded so each server takes well under a minute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.gateway import UpServer, ferryman_up
from tests.helpers.servers import CliServer, serve_cli

EXAMPLES = 6  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Report:
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _runner(operation: Any, mode: GenerationMode, base_url: str, report: Report) -> Any:
    label = f"{operation.label} [{mode.value}]"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        report.calls += 1
        try:
            response = case.call(base_url=base_url, timeout=30)
        except Exception as err:  # a reset or refused connection: the server crashed or hung up
            report.failures.append(
                f"{label}: transport error {type(err).__name__}: {err}\n  {case.as_curl_command()}"
            )
            return
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as err:
            report.failures.append(
                f"{label}: HTTP {response.status_code}: {str(err)[:600]}\n  {case.as_curl_command()}"
            )

    return run


def fuzz(base_url: str, *, model_routes_only: bool = False) -> Report:
    """Every operation (or those under ``/{v}/models/{model}``), positive and negative; failures are collected
    (not shrunk) so the run stays bounded."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    report = Report()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 18, [op.label for op in operations]
    if model_routes_only:
        operations = [op for op in operations if "{model}" in op.path]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with contextlib.suppress(Unsatisfiable):  # no negative form of a parameterless GET
                _runner(operation, mode, base_url, report)()
    return report


def _assert_clean(report: Report, url: str) -> None:
    assert not report.failures, f"{len(report.failures)} failure(s) of {report.calls} calls:\n" + "\n".join(
        report.failures[:10]
    )
    assert report.calls >= 60
    assert sum(n for s, n in report.statuses.items() if 200 <= s < 300) > 0  # the happy path was exercised
    assert sum(n for s, n in report.statuses.items() if 400 <= s < 500) > 0  # and the rejections
    assert httpx.get(url + "/v2/health/ready", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def served(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    cache = tmp_path_factory.mktemp("fuzz-cache")
    with serve_cli(sample_spec, env={"FERRYMAN_MODEL_CACHE": str(cache)}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    with ferryman_up(sample_spec, tmp_path_factory.mktemp("fuzz-state")) as server:
        yield server


def test_fuzz_native_runtime(served: CliServer) -> None:
    report = fuzz(served.url)
    _assert_clean(report, served.url)
    assert served.alive()
    assert "Traceback" not in served.output()


def test_fuzz_gateway(gateway: UpServer) -> None:
    doc = httpx.get(gateway.url + "/openapi.json", timeout=10).json()
    assert doc["info"]["title"] == "ferryman gateway"
    pins = [p for p in doc["paths"]["/v2/models/{model}/infer"]["post"]["parameters"] if p["in"] == "header"]
    assert "x-ferryman-version" in {p["name"] for p in pins}
    report = fuzz(gateway.url, model_routes_only=True)  # the rest is the runtime's code, fuzzed above
    _assert_clean(report, gateway.url)
    assert gateway.alive()
    assert "Traceback" not in gateway.output()
