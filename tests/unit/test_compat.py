"""The fences around third-party internals: each accepts the installed version, refuses versions outside
its range and a dependency that lost an internal it uses, with a message that says what to install; the
ranges are the bounds pyproject.toml declares."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from ferryman._compat import UnsupportedVersion, parse, require_assigned

REPO = Path(__file__).resolve().parents[2]
FENCES = {
    "prometheus": "ferryman._compat.prometheus",
    "uvicorn": "ferryman_runtimes._compat.uvicorn_http",
    "ray": "ferryman_runtimes._compat.ray_serve",
}


@pytest.fixture(scope="module", params=sorted(FENCES))
def fence(request: pytest.FixtureRequest) -> ModuleType:
    import importlib

    return importlib.import_module(FENCES[request.param])


def _declared() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(d for ds in project["optional-dependencies"].values() for d in ds)]


def test_parse_reads_the_release() -> None:
    assert parse("0.26.0") == (0, 26, 0)
    assert parse("2.60.0rc1") == (2, 60, 0)
    assert parse("1.2.post3") == (1, 2)
    with pytest.raises(UnsupportedVersion):
        parse("dev")


def test_the_installed_version_passes(fence: ModuleType) -> None:
    assert metadata.version(fence.DISTRIBUTION) == fence.VERSION
    assert fence.check(fence.VERSION) == fence.VERSION


def test_versions_outside_the_range_are_refused_with_what_to_install(fence: ModuleType) -> None:
    low = parse(fence.AT_LEAST)
    too_old = ".".join(map(str, (*low[:-1], low[-1] - 1))) if low[-1] else f"{low[0] - 1}.99"
    for version in (fence.BELOW, f"{fence.BELOW}.3", too_old):
        with pytest.raises(UnsupportedVersion) as caught:
            fence.check(version)
        message = str(caught.value)
        assert f"{fence.DISTRIBUTION}>={fence.AT_LEAST},<{fence.BELOW}" in message
        assert f"found {version}" in message
        assert isinstance(caught.value, ImportError)
    fence.check(fence.AT_LEAST)


def test_pyproject_declares_the_fenced_range(fence: ModuleType) -> None:
    wanted = f">={fence.AT_LEAST},<{fence.BELOW}"
    declared = [d for d in _declared() if re.match(rf"{re.escape(fence.DISTRIBUTION)}\b", d)]
    assert declared and all(d.endswith(wanted) for d in declared), declared


def test_an_out_of_range_version_fails_the_import(fence: ModuleType) -> None:
    """What a user with an upgraded dependency sees: the import itself raises the fence's message (for Ray,
    before its private module is imported)."""
    code = textwrap.dedent(f"""
        from importlib import metadata
        real = metadata.version
        metadata.version = lambda name: "{fence.BELOW}.1" if name == "{fence.DISTRIBUTION}" else real(name)
        try:
            import {fence.__name__}
        except ImportError as err:
            import sys
            print(type(err).__name__, err)
            print("ray.serve._private.api" in sys.modules)
        else:
            print("imported")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, private_loaded = done.stdout.strip().splitlines()
    assert first.startswith("UnsupportedVersion ferryman supports") and f"found {fence.BELOW}.1" in first
    assert private_loaded == "False"


def test_prometheus_fence_names_a_lost_internal() -> None:
    from ferryman._compat import prometheus

    class Histogram:
        def _metric_init(self) -> None:
            self._buckets: list[Any] = []  # no _sum, no _upper_bounds

    with pytest.raises(UnsupportedVersion, match="no longer sets _upper_bounds, _sum,"):
        prometheus.check_internals("0.26.9", histogram=Histogram)
    with pytest.raises(UnsupportedVersion, match="get_value_class"):
        prometheus.check_internals("0.26.9", values=SimpleNamespace(ValueClass=object))
    prometheus.check_internals(prometheus.VERSION)


def test_prometheus_fence_reads_a_real_histogram_child() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from ferryman._compat.prometheus import fast_inc, histogram_parts

    reg = CollectorRegistry()
    child = Histogram("h_seconds", "", ("a",), buckets=(0.1, 1.0), registry=reg).labels("x")
    bounds, buckets, total = histogram_parts(child)
    assert bounds == (0.1, 1.0, float("inf")) and len(buckets) == 3
    buckets[1].inc(2)
    total.inc(1.5)
    assert reg.get_sample_value("h_seconds_bucket", {"a": "x", "le": "1.0"}) == 2
    assert reg.get_sample_value("h_seconds_sum", {"a": "x"}) == 1.5
    counter = Counter("c", "", ("a",), registry=reg)
    fast_inc(counter.labels("y"))(3)
    assert reg.get_sample_value("c_total", {"a": "y"}) == 3


def test_uvicorn_fence_names_a_lost_method_or_state() -> None:
    from ferryman_runtimes._compat import uvicorn_http

    real = uvicorn_http.HttpToolsProtocol

    stripped = type(
        "HttpToolsProtocol",
        (),
        {
            name: getattr(real, name)
            for name in uvicorn_http.METHODS
            if name != "_unset_keepalive_if_required"
        },
    )
    stripped.__init__ = real.__init__  # type: ignore[misc]
    with pytest.raises(UnsupportedVersion, match="_unset_keepalive_if_required"):
        uvicorn_http.check_internals("0.54.9", protocol=stripped)

    def init(self: Any) -> None:  # sets everything but the parser
        self.app = self.loop = self.logger = self.root_path = self.timeout_keep_alive = None
        self.server_state = self.transport = self.flow = self.pipeline = self.scope = self.headers = None
        self.expect_100_continue = self.cycle = None

    no_parser = type(
        "HttpToolsProtocol", (), {**{n: getattr(real, n) for n in uvicorn_http.METHODS}, "__init__": init}
    )
    with pytest.raises(UnsupportedVersion, match="no longer sets parser"):
        uvicorn_http.check_internals("0.54.9", protocol=no_parser)
    uvicorn_http.check_internals(uvicorn_http.VERSION)


def test_ray_fence_names_a_lost_function_or_parameter() -> None:
    from ferryman_runtimes._compat import ray_serve

    client = SimpleNamespace(deploy_apps=lambda schema: None)
    with pytest.raises(UnsupportedVersion, match="serve_start"):
        ray_serve.check_internals("2.60.9", api=SimpleNamespace(), client=client)

    def serve_start(http_options: Any = None) -> None:  # lost proxy_location
        pass

    with pytest.raises(UnsupportedVersion, match="proxy_location"):
        ray_serve.check_internals("2.60.9", api=SimpleNamespace(serve_start=serve_start), client=client)
    with pytest.raises(UnsupportedVersion, match="deploy_apps"):
        ray_serve.check_internals("2.60.9", api=SimpleNamespace(serve_start=serve_start), client=object())


def test_require_assigned_reads_what_a_function_sets() -> None:
    def init(self: Any) -> None:
        self.kept = 1

    require_assigned(init, ("kept",), distribution="d", version="1")
    with pytest.raises(UnsupportedVersion, match="no longer sets gone"):
        require_assigned(init, ("kept", "gone"), distribution="d", version="1")
