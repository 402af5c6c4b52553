"""Shared fixtures for the whole suite (helpers to reuse live in ``tests/helpers``, see its docstring).

* ``sample_models`` (session) — ``ferryman.examples.export`` run once into a temp dir: the
  ``ExportResult`` (``.directory``, ``.spec`` = deployment.yaml, ``.versions`` = {"v1": path, "v2": path}).
* ``sample_spec`` (session) — path of that deployment.yaml.
* ``traffic`` (session) — the held-out rows (``traffic.npy``, float32 ``[n, 30]``).
* ``native_server`` (session) — ``ferryman serve deployment.yaml`` on a free port, ready; a
  ``tests.helpers.servers.CliServer`` (``.url``). Do not mutate its state.
* ``tiny_models`` (session) — small hand-built ONNX files from ``tests.helpers.models``:
  keys ``add_one``, ``two_inputs``, ``strings``, ``opset_9999``, ``random_bytes``.
* ``model_cache`` — an empty per-test model-cache directory.
* ``control_plane`` (session) — the test cluster (``tests/helpers/cluster_session.py``, a plugin).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import models
from tests.helpers.servers import CliServer, serve_cli

# ``control_plane``: one test cluster per session for tests/cluster and tests/e2e (one real node per machine)
pytest_plugins = ["tests.helpers.cluster_session"]


@pytest.fixture(scope="session")
def sample_models(tmp_path_factory: pytest.TempPathFactory):  # -> ferryman.examples.ExportResult
    from ferryman.examples import export

    return export(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="session")
def sample_spec(sample_models) -> Path:
    return Path(sample_models.spec)


@pytest.fixture(scope="session")
def traffic(sample_models) -> np.ndarray:
    return np.load(Path(sample_models.directory) / "traffic.npy")


@pytest.fixture(scope="session")
def native_server(sample_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    cache = tmp_path_factory.mktemp("native-cache")
    with serve_cli(sample_spec, env={"FERRYMAN_MODEL_CACHE": str(cache)}) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny-models")
    random_bytes = d / "random.onnx"
    random_bytes.write_bytes(np.random.default_rng(3).bytes(4096))
    return {
        "add_one": models.add_one_model(d / "add_one.onnx"),
        "two_inputs": models.two_input_model(d / "two_inputs.onnx"),
        "strings": models.string_identity_model(d / "strings.onnx"),
        "opset_9999": models.model_with_opset(d / "opset_9999.onnx", 9999),
        "random_bytes": random_bytes,
    }


@pytest.fixture
def model_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "model-cache"
    cache.mkdir()
    return cache
