"""The images ``make images`` builds here (scripts/images/build.sh), without any registry but PyPI and Debian.

The module builds them once with the cluster's run directory, so they are also loaded into the real node's
containerd: a cold build takes minutes (the Debian base, then the lock's wheels), a warm one seconds (every
image is tagged with the digest of its inputs and cached in ~/.cache/ferryman/buildah). Then:

* the build prints one reference per image and writes them to the env file the e2e tests read;
* a second build with no change rebuilds and reloads nothing, and prints the same references;
* the images run as a non-root user, and under another uid (the chart's 10001) their programs import and
  start: the runtime image's ``ferryman``, the operator's ``python -m ferryman_operator``, Ray in the ray
  image;
* on the real node, a pod of the runtime image running ``ferryman serve`` on the exported example deployment,
  under the ``restricted`` Pod Security level with a read-only root filesystem, answers ``/v2/health/ready``
  and a v2 inference on its pod IP from this machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ferryman.protocol import v2
from tests.helpers.models import reference_outputs

from .controlplane import ControlPlane

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "scripts" / "images" / "build.sh"
NAMES = {"runtime": "ferryman", "operator": "ferryman-operator", "ray": "ferryman-ray"}
REF = re.compile(
    r"^ghcr\.io/ferryman-dev/(ferryman|ferryman-operator|ferryman-ray):\d+\.\d+\.\d+-local\.[0-9a-f]{12}$"
)
RUN_AS = 10001  # the chart's and the operator's pods


@dataclass
class Build:
    refs: dict[str, str]  # runtime / operator / ray -> reference
    stdout: str
    stderr: str
    env_file: Path


def run_build(run_dir: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERRYMAN_IMAGES_ENV": str(env_file)}
    env.pop("FERRYMAN_IMAGES", None)
    return subprocess.run(
        ["bash", str(BUILD), str(run_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def buildah(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """buildah on the store of scripts/images (``bh`` in lib.sh)."""
    script = f'source "{REPO_ROOT}/scripts/images/lib.sh"; bh "$@"'
    return subprocess.run(
        ["bash", "-c", script, "buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def built(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Build:
    env_file = tmp_path_factory.mktemp("images") / "images.env"
    proc = run_build(control_plane.run_dir, env_file)
    assert proc.returncode == 0, f"scripts/images/build.sh failed:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.split()
    refs = {}
    for kind, name in NAMES.items():
        [ref] = [line for line in lines if line.split(":")[0].endswith("/" + name)]
        refs[kind] = ref
    return Build(refs=refs, stdout=proc.stdout, stderr=proc.stderr, env_file=env_file)


def test_build_prints_one_reference_per_image_and_writes_them_for_the_tests(built: Build) -> None:
    lines = built.stdout.splitlines()
    assert len(lines) == 3 and sorted(lines) == sorted(built.refs.values())
    for ref in lines:
        assert REF.match(ref), ref
        assert buildah("inspect", "--type", "image", ref).returncode == 0, f"{ref} is not in the store"
    # the runtime and ray images come from one Dockerfile and the same inputs: one tag
    assert built.refs["runtime"].split(":")[1] == built.refs["ray"].split(":")[1]
    env = dict(
        line.split("=", 1)
        for line in built.env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["FERRYMAN_LOCAL_IMAGE"] == built.refs["runtime"]
    assert env["FERRYMAN_LOCAL_OPERATOR_IMAGE"] == built.refs["operator"]
    assert env["FERRYMAN_LOCAL_RAY_IMAGE"] == built.refs["ray"]
    assert env["FERRYMAN_LOCAL_IMAGE_TAG"] == built.refs["runtime"].split(":")[1]
    assert env["FERRYMAN_LOCAL_BASE_IMAGE"].startswith("localhost/ferryman-python:bookworm-")


def test_second_build_with_no_change_is_cached(built: Build, control_plane: ControlPlane) -> None:
    again = run_build(control_plane.run_dir, built.env_file)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout == built.stdout
    assert "building " not in again.stderr and "debootstrapping" not in again.stderr, again.stderr
    assert "importing " not in again.stderr, again.stderr
    for ref in built.refs.values():
        assert f"{ref} is cached" in again.stderr, again.stderr


def image_config(ref: str) -> dict[str, Any]:
    proc = buildah("inspect", "--type", "image", ref)
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = json.loads(proc.stdout)["Docker"]["config"]
    return config


@pytest.mark.parametrize(
    ("kind", "user"), [("runtime", "1000:1000"), ("operator", "1000:1000"), ("ray", "1000:100")]
)
def test_images_run_as_a_non_root_user(built: Build, kind: str, user: str) -> None:
    config = image_config(built.refs[kind])
    assert config["User"] == user
    assert config["Healthcheck"]["Test"][0] == "CMD"  # kept: the images are in Docker format


@pytest.fixture(scope="module")
def containers(built: Build) -> Iterator[dict[str, str]]:
    """A working container of each image in the buildah store (removed at the end)."""
    made: dict[str, str] = {}
    try:
        for kind, ref in built.refs.items():
            proc = buildah("from", "--pull=never", ref)
            assert proc.returncode == 0, proc.stderr
            made[kind] = proc.stdout.strip()
        yield made
    finally:
        for name in made.values():
            buildah("rm", name)


def run_in(container: str, *argv: str, user: str = f"{RUN_AS}:{RUN_AS}") -> subprocess.CompletedProcess[str]:
    """Run a program in the container as ``user`` (the image's environment and working directory)."""
    return buildah("run", "--isolation", "chroot", "--user", user, container, "--", *argv)


def test_runtime_image_programs_import_and_start_under_another_uid(containers: dict[str, str]) -> None:
    c = containers["runtime"]
    proc = run_in(
        c,
        "python",
        "-c",
        "import os, sys, ferryman_runtimes, ferryman_operator, onnxruntime, locust, "
        "sklearn, evidently; print(os.getuid(), os.environ['HOME'], sys.prefix)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(RUN_AS), "/tmp", "/opt/venv"]
    proc = run_in(c, "ferryman", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout
    # The default command is the KServe runtime's; it parses its flags.
    proc = run_in(c, "python", "-m", "ferryman_runtimes.kserve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--model_dir" in proc.stdout


def test_runtime_image_holds_no_build_leftovers(containers: dict[str, str]) -> None:
    proc = run_in(
        containers["runtime"],
        "python",
        "-c",
        "import os, shutil; print([p for p in ('/src', '/wheels') "
        "if os.path.exists(p)], [t for t in ('gcc', 'cc', 'make') if shutil.which(t)])",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []"


def test_operator_image_runs_the_operator(containers: dict[str, str]) -> None:
    proc = run_in(containers["operator"], "python", "-m", "ferryman_operator", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--kubeconfig" in proc.stdout
    # only the operator's dependencies
    proc = run_in(
        containers["operator"],
        "python",
        "-c",
        "import importlib.util as u; print([m for m in ('onnxruntime', 'ray', 'locust') if u.find_spec(m)])",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['onnxruntime']"  # a core dependency of ferryman; no serving stack


def test_ray_image_carries_ray_serve_and_the_ray_app(containers: dict[str, str]) -> None:
    proc = run_in(
        containers["ray"],
        "python",
        "-c",
        "import ray, ray.serve, ferryman_runtimes.ray.app; print(ray.__version__)",
        user="1000:100",
    )
    assert proc.returncode == 0, proc.stderr
    lock = (REPO_ROOT / "requirements" / "lock.txt").read_text()
    assert f"\nray=={proc.stdout.strip()}\n" in lock


# --- the runtime image on the real node ------------------------------------------------------------


def example_objects(namespace: str, image: str, export_dir: Path) -> list[dict[str, Any]]:
    """A ConfigMap with the exported example (spec + model files) and a pod serving it with the image,
    as restricted as the operator's version servers (uid 10001, read-only root, /tmp an emptyDir)."""
    files = sorted(
        p.relative_to(export_dir)
        for p in export_dir.rglob("*")
        if p.is_file() and (p.name == "deployment.yaml" or p.parent.parent.name == "models")
    )
    keys = {str(rel): str(rel).replace("/", "-") for rel in files}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "example", "namespace": namespace},
        "binaryData": {
            keys[str(rel)]: base64.b64encode((export_dir / rel).read_bytes()).decode() for rel in files
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "serve", "namespace": namespace},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["ferryman"],
                    "args": [
                        "serve",
                        "/etc/ferryman/example/deployment.yaml",
                        "--host",
                        "0.0.0.0",
                        "--port",
                        "8080",
                    ],
                    "env": [{"name": "FERRYMAN_MODEL_CACHE", "value": "/tmp/models"}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": "http"},
                        "periodSeconds": 1,
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumeMounts": [
                        {"name": "example", "mountPath": "/etc/ferryman/example", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "example",
                    "configMap": {
                        "name": "example",
                        "items": [{"key": k, "path": p} for p, k in keys.items()],
                    },
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    return [config_map, pod]


def wait_ready(cp: ControlPlane, namespace: str, pod: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        obj: dict[str, Any] = cp.get_json("-n", namespace, "pod", pod)
        conditions = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            return obj
        if time.monotonic() > deadline:
            events = cp.kubectl("-n", namespace, "get", "events", check=False).stdout
            logs = cp.kubectl("-n", namespace, "logs", pod, "--tail=40", check=False)
            pytest.fail(
                f"pod {pod} not Ready after {timeout}s: {json.dumps(obj.get('status'), indent=1)}\n"
                f"{events}\n{logs.stdout}{logs.stderr}",
                pytrace=False,
            )
        time.sleep(0.5)


def test_runtime_image_serves_the_example_on_the_real_node(
    built: Build, control_plane: ControlPlane, tmp_path: Path
) -> None:
    env = dict(
        line.split("=", 1)
        for line in built.env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["FERRYMAN_LOCAL_IMAGES_LOADED"], (
        "the images were not loaded into a real node (no containerd in "
        f"{control_plane.run_dir}/cluster.env):\n"
        f"{built.stderr[-2000:]}"
    )
    loaded = control_plane.ctr("images", "ls", "-q").stdout.decode().split()
    assert built.refs["runtime"] in loaded

    export_dir = tmp_path / "example"
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "ferryman"), "examples", "export", str(export_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    namespace = control_plane.create_namespace(on="real")  # restricted Pod Security
    try:
        control_plane.apply(example_objects(namespace, built.refs["runtime"], export_dir))
        pod = wait_ready(control_plane, namespace, "serve")
        assert pod["spec"]["nodeName"] == control_plane.node_name
        url = f"http://{pod['status']['podIP']}:8080"

        assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
        x = np.load(export_dir / "traffic.npy")[:16]
        payload, _ = v2.encode_request({"input": x})
        for version in ("v1", "v2"):
            resp = httpx.post(
                f"{url}/v2/models/breast-cancer/versions/{version}/infer", content=payload, timeout=30
            )
            assert resp.status_code == 200, resp.text
            got = {o["name"]: o["data"] for o in v2.decode_response(resp.content)["outputs"]}
            want = reference_outputs(export_dir / "models" / version / "model.onnx", {"input": x})
            np.testing.assert_array_equal(got["label"], want["label"])
        # bad input: a clear 4xx from the container, not a 500
        bad = httpx.post(
            f"{url}/v2/models/breast-cancer/infer", json={"inputs": [{"name": "input"}]}, timeout=10
        )
        assert 400 <= bad.status_code < 500, bad.text

        # the server runs as the pod's uid and the image's root filesystem is read-only
        probe = control_plane.kubectl(
            "-n",
            namespace,
            "exec",
            "serve",
            "--",
            "python",
            "-c",
            "import os\ntry:\n    open('/opt/venv/x', 'w')\nexcept OSError as e:\n    print(os.getuid(), "
            "e.errno)",
        )
        assert probe.stdout.split() == [str(RUN_AS), "30"]  # EROFS
    finally:
        control_plane.delete_namespace(namespace)
