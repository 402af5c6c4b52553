"""A real Prometheus (Debian package ``prometheus``) on loopback for tests, and PromQL helpers.

* :func:`prometheus` — context manager: start ``/usr/bin/prometheus`` with a temporary config scraping the
  given targets every second (each with a static ``namespace`` label, as Kubernetes service discovery
  would add), a temporary TSDB and a free port; wait until it is ready; yield a :class:`Prometheus`
  (``.url``, ``.query(expr)``, ``.wait_for(expr, ...)``, ``.targets()``, ``.label_values(...)``); stop it.
* :func:`prometheus_binary` / :func:`promtool_binary` — the executables, or ``None`` (tests then skip).
* :func:`parse_exposition` — the samples of a ``/metrics`` body, for comparing scrapes with Prometheus.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferryman.processes import ServerFailed, stop, wait_http
from tests.helpers.ports import free_port

HOST = "127.0.0.1"
SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str | None:
    for candidate in ("/usr/bin/prometheus", shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def promtool_binary() -> str | None:
    for candidate in ("/usr/bin/promtool", shutil.which("promtool")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PrometheusError(RuntimeError):
    pass


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    url: str = ""

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}"

    def output(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: Any) -> Any:
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        doc = resp.json()
        if doc.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (raises on a PromQL error)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None when empty; raises when several series answer)."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr} returned {len(result)} series")
        return float(result[0]["value"][1])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout: float = 60.0,
        interval: float = 0.5,
        what: str | None = None,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.query(expr)
                if predicate(last):
                    return last
            except (PrometheusError, httpx.HTTPError) as err:
                last = err
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or expr} (last: {last!r})"
                )
            time.sleep(interval)

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def series(self, match: str) -> list[dict[str, str]]:
        found: list[dict[str, str]] = self.api("series", **{"match[]": match})
        return found


def config(
    targets: Mapping[str, Sequence[str]],
    *,
    namespace: str = "ferryman-test",
    rule_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """A Prometheus config: one scrape job per entry of ``targets`` ({job: ["host:port", ...]})."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(hosts), "labels": {"namespace": namespace}}],
            }
            for job, hosts in targets.items()
        ],
    }


@contextlib.contextmanager
def prometheus(
    targets: Mapping[str, Sequence[str]],
    *,
    namespace: str = "ferryman-test",
    rule_files: Sequence[str | Path] = (),
    timeout: float = 60.0,
) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError(
            "prometheus is not installed (apt-get install prometheus; scripts/system-deps.sh)"
        )
    directory = Path(tempfile.mkdtemp(prefix="ferryman-prometheus-"))
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config(targets, namespace=namespace, rule_files=rule_files)))
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={HOST}:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(process=process, port=port, directory=directory)
    try:
        _wait_ready(server, timeout=timeout)
        yield server
    finally:
        stop(process, timeout=15)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(server: Prometheus, *, timeout: float) -> None:
    try:
        wait_http(
            f"{server.url}/-/ready",
            timeout=timeout,
            interval=0.2,
            alive=lambda: server.process.poll() is None,
        )
    except ServerFailed as err:
        raise PrometheusError(f"prometheus is not ready ({err}):\n{server.output()}") from err


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(name, labels): value} for every sample of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return samples


def sample_sum(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= lbls)
