"""The container images without a Docker engine: their structure, and the exact commands they run.

Each Dockerfile is parsed; the runtime image's ENTRYPOINT + CMD is run here (``python`` = this venv's,
``/mnt/models`` laid out as the storage initializer does, the port made free) and its HEALTHCHECK command
is run against it, up and down. The operator image's HEALTHCHECK is run the same way, and its ENTRYPOINT
with ``--help`` (a real run needs the control plane: the operator's cluster tests). The images themselves are
built and run by tests/cluster/test_images_built.py (``make images``).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.ports import free_port
from tests.helpers.servers import wait_http

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
RUNTIME_FILE = ROOT / "runtimes" / "ferryman_runtimes" / "kserve" / "clusterservingruntime.yaml"
# Stages that only feed others: the dependencies' venv, the wheel's build, and the Ray base made from the
# Python image for machines without Docker Hub (``--build-arg RAY_IMAGE=ray-base``).
HELPER_STAGES = ("requirements", "deps", "build", "ray-base")


@dataclass
class Stage:
    name: str
    base: str
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    copies_from: list[str] = field(default_factory=list)


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG" and stage is None:
            k, _, v = rest.partition("=")
            args[k] = v
        elif instr == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            base = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(1))
            stage = stages[m.group(2)] = Stage(name=m.group(2), base=base)
        elif stage is None:
            continue
        elif instr == "USER":
            stage.user = rest
        elif instr == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                stage.env[k] = v
        elif instr in ("ENTRYPOINT", "CMD"):
            setattr(stage, instr.lower(), json.loads(rest))
        elif instr == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif instr == "COPY" and "--from=" in rest:
            stage.copies_from.append(re.search(r"--from=(\S+)", rest).group(1))  # type: ignore[union-attr]
    return stages


def localise(argv: list[str]) -> list[str]:
    """The image's command on this machine: its ``python`` is this venv's interpreter."""
    return [sys.executable if a == "python" else a for a in argv]


@pytest.fixture(scope="module")
def runtime_image() -> dict[str, Stage]:
    return parse_dockerfile(IMAGES / "runtime.Dockerfile")


@pytest.fixture(scope="module")
def operator_image() -> dict[str, Stage]:
    return parse_dockerfile(IMAGES / "operator.Dockerfile")


@pytest.mark.parametrize("dockerfile", ["runtime.Dockerfile", "operator.Dockerfile"])
def test_images_are_multi_stage_non_root_pinned_and_health_checked(dockerfile: str) -> None:
    stages = parse_dockerfile(IMAGES / dockerfile)
    final = [s for s in stages.values() if s.name not in HELPER_STAGES]
    assert "build" in stages and final
    for s in stages.values():
        if s.base in stages:  # built on an earlier stage
            continue
        assert re.search(r":\d+\.\d+\.\d+", s.base), f"{s.name}: base image not pinned to a version: {s.base}"
        assert "latest" not in s.base
    for s in final:
        assert "build" in s.copies_from, f"{s.name} does not take its artefacts from the build stage"
        assert s.user is not None and s.user.split(":")[0] not in ("0", "root"), f"{s.name} runs as root"
        assert s.healthcheck, f"{s.name} has no HEALTHCHECK"
        assert "FERRYMAN_HEALTHCHECK_URL" in s.env


def test_runtime_image_runs_the_cluster_serving_runtime_command(runtime_image: dict[str, Stage]) -> None:
    [container] = yaml.safe_load(RUNTIME_FILE.read_text())["spec"]["containers"]
    runtime = list(runtime_image)[-1]
    assert runtime == "runtime"  # the default target
    assert runtime_image[runtime].entrypoint == container["command"]


def run_healthcheck(stage: Stage, url: str) -> int:
    env = {
        **os.environ,
        **{k: v for k, v in stage.env.items() if not k.startswith("PATH")},
        "FERRYMAN_HEALTHCHECK_URL": url,
    }
    return subprocess.run(
        localise(stage.healthcheck), env=env, capture_output=True, timeout=30, check=False
    ).returncode


@pytest.fixture(scope="module")
def runtime_container(
    runtime_image: dict[str, Stage], sample_models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    stage = runtime_image["runtime"]
    models = tmp_path_factory.mktemp("mnt") / "models"
    models.mkdir()
    (models / "model.onnx").write_bytes(Path(sample_models.versions["v1"]).read_bytes())
    port = free_port()
    argv = [*stage.entrypoint, *stage.cmd]
    argv = [str(models) if a == "/mnt/models" else str(port) if a == "8080" else a for a in argv]
    process = subprocess.Popen(
        [*localise(argv), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v2/health/ready", timeout=60, alive=lambda: process.poll() is None)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_runtime_image_default_command_serves_the_model(runtime_container: str) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
    resp = httpx.post(f"{runtime_container}/v2/models/model/infer", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_name"] == "model"


def test_runtime_image_healthcheck_passes_when_ready_and_fails_when_down(
    runtime_image: dict[str, Stage], runtime_container: str
) -> None:
    stage = runtime_image["runtime"]
    assert stage.env["FERRYMAN_HEALTHCHECK_URL"] == "http://127.0.0.1:8080/v2/health/ready"
    assert run_healthcheck(stage, f"{runtime_container}/v2/health/ready") == 0
    assert run_healthcheck(stage, f"http://127.0.0.1:{free_port()}/v2/health/ready") != 0
    assert run_healthcheck(stage, f"{runtime_container}/no-such-endpoint") != 0  # a 404 is unhealthy


def test_ray_image_healthcheck_targets_the_serve_proxy(runtime_image: dict[str, Stage]) -> None:
    stage = runtime_image["ray"]
    assert stage.base.startswith("rayproject/ray:2.60.0-")  # the default; ``make images`` uses ray-base
    assert stage.env["FERRYMAN_HEALTHCHECK_URL"] == "http://127.0.0.1:8000/-/healthz"
    assert run_healthcheck(stage, f"http://127.0.0.1:{free_port()}/-/healthz") != 0


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_operator_image_healthcheck(operator_image: dict[str, Stage]) -> None:
    stage = operator_image["operator"]
    assert stage.env["FERRYMAN_HEALTH_ADDRESS"] == "0.0.0.0:8081"  # where kopf serves /healthz
    assert stage.env["FERRYMAN_HEALTHCHECK_URL"] == "http://127.0.0.1:8081/healthz"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert run_healthcheck(stage, f"http://127.0.0.1:{server.server_port}/healthz") == 0
        assert run_healthcheck(stage, f"http://127.0.0.1:{free_port()}/healthz") != 0
    finally:
        server.shutdown()
        server.server_close()


def test_operator_image_entrypoint_is_the_operator(operator_image: dict[str, Stage]) -> None:
    """The entrypoint imports and parses its flags; running it for real needs a cluster (tests/cluster)."""
    stage = operator_image["operator"]
    assert stage.entrypoint == ["python", "-m", "ferryman_operator"]
    done = subprocess.run(
        [*localise(stage.entrypoint), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ferryman_operator" in done.stdout and "--kubeconfig" in done.stdout


def test_ray_base_installs_ray_from_the_lock_on_the_python_image(runtime_image: dict[str, Stage]) -> None:
    """``--build-arg RAY_IMAGE=ray-base`` builds the ray target without Docker Hub: that stage starts from
    the same Python image as the others, and its Ray version is the lock's (the one the tests run)."""
    text = (IMAGES / "runtime.Dockerfile").read_text()
    base = runtime_image["ray-base"]
    assert base.base == runtime_image["deps"].base  # the Python image
    assert runtime_image["runtime"].base == "deps"  # the runtime is built on the dependencies' stage
    assert base.env["PATH"].startswith("/opt/ray/bin:")  # pip and python on PATH, as in rayproject/ray
    ray_base = text[text.index("AS ray-base") : text.index("AS ray\n")]
    assert '-c /tmp/lock.txt "ray[serve]"' in ray_base
    assert "useradd --uid 1000 --gid 100" in ray_base  # the ray target runs as USER 1000:100
    assert runtime_image["ray"].user == "1000:100"
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    assert re.search(r"^ray==\d", lock, re.MULTILINE), "the lock pins ray"


@pytest.mark.parametrize(
    ("dockerfile", "extras"),
    [
        ("runtime.Dockerfile", ["serve", "drift", "operator", "loadtest", "examples"]),
        ("operator.Dockerfile", ["operator"]),
    ],
)
def test_dependency_layer_lists_exactly_what_pyproject_declares(
    dockerfile: str, extras: list[str], tmp_path: Path
) -> None:
    """The ``requirements`` stage's command, run here on a copy of pyproject.toml, writes the [project]
    dependencies and the image's extras; an edit elsewhere in pyproject.toml leaves its output (and so the
    cached dependency layer) unchanged."""
    text = re.sub(r"\\\n", " ", (IMAGES / dockerfile).read_text())
    stage = text[text.index("AS requirements") : text.index("AS deps")]
    [run] = [line.strip()[4:] for line in stage.splitlines() if line.strip().startswith("RUN ")]

    def requirements(pyproject_text: str) -> list[str]:
        (tmp_path / "pyproject.toml").write_text(pyproject_text)
        command = run.replace("/src/pyproject.toml", str(tmp_path / "pyproject.toml")).replace(
            "/requirements.txt", str(tmp_path / "requirements.txt")
        )
        subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], check=True)
        return (tmp_path / "requirements.txt").read_text().split()

    source = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(source)["project"]
    expected = [*project["dependencies"], *(d for e in extras for d in project["optional-dependencies"][e])]
    got = requirements(source)
    assert got == [d.replace(" ", "") for d in expected]
    assert requirements(source.replace("[tool.ruff]", "[tool.ruff]\n# a tool setting changed")) == got
