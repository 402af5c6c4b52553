"""The benchmark's contenders: one small class each, registered by name.

A contender is either in-process (raw ONNX Runtime, measured by the harness itself) or a server started as
its own process (:class:`ProcessContender`: ``argv()`` plus a readiness path) and stopped afterwards.
:meth:`Contender.unavailable` says why a contender cannot run here (its module or command is missing);
the harness reports it as "n/a" instead of failing. Adding one is a few lines::

    @register
    class MyRuntime(ProcessContender):
        name, label, group = "my-runtime", "my runtime", "ferryman"
        def argv(self, ctx, port): return [sys.executable, "-m", "my.server", "--port", str(port)]
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import yaml

from loadtests.servers import HOST, ServerFailed, ServerProcess, ferryman_argv, ferryman_help, free_port


@dataclass(frozen=True)
class BenchContext:
    workdir: Path
    spec: Path  # the examples' deployment.yaml: v1 stable, v2 canary parked at its first step
    model_path: Path  # the stable version's ONNX file: what every contender serves
    model_name: str
    rows: np.ndarray  # held-out traffic rows
    repo_root: Path
    env: dict[str, str] = field(default_factory=dict)

    def spec_variant(self, name: str, **changes: object) -> Path:
        """A copy of the spec with top-level ``spec`` fields replaced (e.g. ``runtime="ray"``)."""
        doc = yaml.safe_load(self.spec.read_text())
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
                doc["spec"][key] = {**doc["spec"][key], **value}
            else:
                doc["spec"][key] = value
        path = self.spec.with_name(f"deployment-{name}.yaml")
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


class Contender(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    group: ClassVar[str]  # "limit", "peer" or "ferryman"
    in_process: ClassVar[bool] = False
    batch: ClassVar[bool] = False  # also measured with 256-row v2 binary requests
    startup_timeout: ClassVar[float] = 60.0
    once: ClassVar[bool] = False  # measured in the first round only (slow to start)
    start_attempts: ClassVar[int] = 1  # Ray's startup can time out on a loaded machine: try again

    url: str = ""
    startup_seconds: float = 0.0

    def unavailable(self, ctx: BenchContext) -> str | None:
        """None when the contender can run here, else why not."""
        return None

    def start(self, ctx: BenchContext) -> None:
        return None

    def stop(self) -> None:
        return None

    def output(self) -> str:
        """The tail of the server's output (quoted when it fails)."""
        return ""


class ProcessContender(Contender):
    ready_path: ClassVar[str] = "/v2/health/ready"
    # Servers with drift monitoring load Evidently in a background process after they are ready (about 10 s
    # of one niced core, once). Measuring steady state means waiting for it: GET /drift says when.
    waits_for_drift: ClassVar[bool] = False
    drift_timeout: ClassVar[float] = 180.0
    server: ServerProcess | None = None

    @abstractmethod
    def argv(self, ctx: BenchContext, port: int) -> list[str]: ...

    def start(self, ctx: BenchContext) -> None:
        port = free_port()
        self.server = ServerProcess(
            self.argv(ctx, port),
            port=port,
            ready_path=self.ready_path,
            env=ctx.env,
            startup_timeout=self.startup_timeout,
            cwd=ctx.repo_root,
        )
        self.server.start()
        self.url = self.server.url
        self.startup_seconds = self.server.startup_seconds
        if self.waits_for_drift:
            wait_for_drift_engine(self.url, timeout=self.drift_timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None

    def output(self) -> str:
        return self.server.output() if self.server is not None else ""


def wait_for_drift_engine(url: str, *, timeout: float) -> None:
    """Until ``GET /drift`` answers with ``x-ferryman-drift-engine: ready`` (a server without the header
    has no such warm-up: return at once)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/drift", timeout=10)
        state = response.headers.get("x-ferryman-drift-engine")
        if state is None or state == "ready":
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"the drift engine was not ready after {timeout:.0f} s")
        time.sleep(0.25)


REGISTRY: dict[str, type[Contender]] = {}


def register(cls: type[Contender]) -> type[Contender]:
    REGISTRY[cls.name] = cls
    return cls


def _module_missing(module: str) -> str | None:
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    return None if found is not None else f"module {module} is not available"


def _contender_module(name: str) -> list[str]:
    return [sys.executable, "-m", f"loadtests.contenders.{name}"]


def _model_args(ctx: BenchContext, port: int) -> list[str]:
    return [
        "--model-path",
        str(ctx.model_path),
        "--model-name",
        ctx.model_name,
        "--host",
        HOST,
        "--port",
        str(port),
    ]


@register
class RawOrt(Contender):
    name, label, group = "raw-ort", "raw ONNX Runtime, in-process (no HTTP)", "limit"
    in_process = True
    batch = True


@register
class MinimalAsgi(ProcessContender):
    name, label, group = "minimal-asgi", "minimal ASGI + orjson + ORT (uvicorn, uvloop, httptools)", "peer"

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*_contender_module("minimal_asgi"), *_model_args(ctx, port)]


@register
class FastApi(ProcessContender):
    name, label, group = "fastapi", "FastAPI + orjson + ORT (uvicorn, uvloop, httptools)", "peer"

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*_contender_module("fastapi_app"), *_model_args(ctx, port)]


@register
class KServeStock(ProcessContender):
    name, label, group = "kserve-stock", "stock KServe ModelServer, custom kserve.Model (v2)", "peer"
    startup_timeout = 120.0

    def unavailable(self, ctx: BenchContext) -> str | None:
        return _module_missing("kserve")

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*_contender_module("kserve_stock"), *_model_args(ctx, port)]


@register
class RayStock(ProcessContender):
    name, label, group = "ray-stock", "plain Ray Serve deployment (local Ray, 2 CPUs)", "peer"
    startup_timeout = 300.0
    once = True
    start_attempts = 2

    def unavailable(self, ctx: BenchContext) -> str | None:
        return _module_missing("ray.serve")

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*_contender_module("ray_stock"), *_model_args(ctx, port)]


@register
class FerrymanNative(ProcessContender):
    name, label, group = (
        "ferryman-native",
        "ferryman serve SPEC (native runtime, direct; metrics + drift)",
        "ferryman",
    )
    batch = True
    waits_for_drift = True

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return [*ferryman_argv(), "serve", str(ctx.spec), "--host", HOST, "--port", str(port)]


@register
class FerrymanNativeFile(ProcessContender):
    """The native runtime on the bare .onnx file: no spec, hence no drift monitoring (metrics stay on)."""

    name, label, group = (
        "ferryman-native-file",
        "ferryman serve MODEL.onnx (native, no spec: no drift)",
        "ferryman",
    )

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        named = ctx.workdir / f"{ctx.model_name}.onnx"  # the file name is the model name
        if not named.is_file() or named.read_bytes() != ctx.model_path.read_bytes():
            shutil.copyfile(ctx.model_path, named)
        return [*ferryman_argv(), "serve", str(named), "--host", HOST, "--port", str(port)]


class _Gateway(ProcessContender):
    group = "ferryman"
    batch = True
    startup_timeout = 120.0

    def unavailable(self, ctx: BenchContext) -> str | None:
        if ferryman_help("up") is None:
            return "ferryman up is not available"
        return None

    def state_dir(self, ctx: BenchContext) -> Path:
        return ctx.workdir / f"state-{self.name}"

    def start(self, ctx: BenchContext) -> None:
        # A fresh rollout every time: a saved state from an earlier run may have moved past the canary step.
        shutil.rmtree(self.state_dir(ctx), ignore_errors=True)
        super().start(ctx)

    def _up(self, ctx: BenchContext, spec: Path, port: int) -> list[str]:
        """``ferryman up`` with its admin API on a free port and its state kept out of the checkout."""
        argv = [*ferryman_argv(), "up", str(spec), "--port", str(port)]
        options = ferryman_help("up") or ""
        if "--host" in options:
            argv += ["--host", HOST]
        if "--admin-port" in options:
            argv += ["--admin-port", str(free_port())]
        if "--state-dir" in options:
            argv += ["--state-dir", str(self.state_dir(ctx))]
        return argv


@register
class FerrymanGateway(_Gateway):
    name, label = "ferryman-gateway", "ferryman up: gateway, canary split, metrics + drift on"
    waits_for_drift = True

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        return self._up(ctx, ctx.spec, port)


@register
class FerrymanGatewayPlain(_Gateway):
    """The same gateway and canary split with drift monitoring and metrics off (the cost baseline)."""

    name, label = "ferryman-gateway-plain", "ferryman up: gateway, canary split, metrics + drift off"

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        spec = ctx.spec_variant("plain", drift={"enabled": False})
        return [*self._up(ctx, spec, port), "--no-metrics"]


class _EntryPointRuntime(ProcessContender):
    """A ferryman runtime registered under the ``ferryman.runtimes`` entry points, launched like ``serve``."""

    group = "ferryman"
    batch = True
    runtime: ClassVar[str]
    module: ClassVar[str]
    startup_timeout = 300.0
    once = True
    start_attempts = 2

    def unavailable(self, ctx: BenchContext) -> str | None:
        if self.runtime not in {ep.name for ep in entry_points(group="ferryman.runtimes")}:
            return f"runtime {self.runtime!r} is not registered (ferryman.runtimes entry points)"
        return _module_missing(self.module)

    def argv(self, ctx: BenchContext, port: int) -> list[str]:
        spec = ctx.spec_variant(self.runtime, runtime=self.runtime)
        code = (
            "import sys; from ferryman.cli.runtimes import launcher; "
            "launcher(sys.argv[1])(sys.argv[2], host=sys.argv[3], port=int(sys.argv[4]))"
        )
        return [sys.executable, "-c", code, self.runtime, str(spec), HOST, str(port)]


@register
class FerrymanRay(_EntryPointRuntime):
    name, label = "ferryman-ray", "ferryman Ray runtime"
    runtime, module = "ray", "ferryman_runtimes.ray"


@register
class FerrymanKServe(_EntryPointRuntime):
    name, label = "ferryman-kserve", "ferryman KServe-contract runtime"
    runtime, module = "kserve", "ferryman_runtimes.kserve"
    startup_timeout = 120.0
    once = False


def create(names: list[str] | None = None) -> list[Contender]:
    """Instances of the named contenders (all, in registry order, when ``names`` is None)."""
    chosen = list(REGISTRY) if names is None else names
    unknown = [n for n in chosen if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown contender(s) {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return [REGISTRY[n]() for n in chosen]
