"""`ferryman up` for tests: spec files, the subprocess with its admin API, clients and concurrent load.

* :func:`write_spec` — write a ModelDeployment YAML (atomically: temp file + rename, like a careful editor)
  for the sample model name and the given versions/traffic/budget.
* :func:`start_up` / :func:`ferryman_up` — run ``ferryman up SPEC --port P --admin-port A --state-dir D`` on
  free ports; wait until the gateway is ready and the admin API answers; yield an :class:`UpServer`
  (``.url``, ``.admin_url``, ``.token``, ``.status()``, ``.admin(...)``, ``.stop(signal)``, ``.output()``).
* :func:`v2_body` / :class:`Client` — one-row v2 JSON inference requests with pins, sticky headers/cookies
  and extra inputs; every answer is checked for ``model_version``.
* :class:`Load` — background client threads that keep sending until stopped (bounded by count and time)
  and record every outcome, so tests can assert zero errors across a switch.
* :func:`arms_for` — one request per sticky key from a few threads: the arm each key got.
* :func:`wait_until` — poll a condition with a bounded number of attempts and a deadline;
  :func:`phase_reached` is a ready-made condition on the rollout phase.
* :func:`traffic_rows` / :func:`actions` — the status document's accounting rows by (version, route), and
  the rollout history as action names.

The ``ferryman up`` log is written beside the state dir (inside the test's tmp dir).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import yaml

from ferryman import processes
from tests.helpers.ports import free_port
from tests.helpers.servers import HOST, ServerFailed, ferryman_command, wait_http

MODEL = "breast-cancer"
INFER_PATH = f"/v2/models/{MODEL}/infer"


# -- specs ---------------------------------------------------------------------------------------------
def spec_document(
    *,
    versions: Mapping[str, str | Path],
    traffic: Mapping[str, Any],
    budget: Mapping[str, Any] | None = None,
    name: str = MODEL,
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "runtime": "native",
            "versions": [{"name": v, "uri": str(p)} for v, p in versions.items()],
            "budget": dict(budget or {"p99Ms": 100, "maxErrorRate": 0.01}),
            "traffic": dict(traffic),
            "drift": {"enabled": False},
        },
    }


def write_spec(path: Path, **document: Any) -> Path:
    """Write :func:`spec_document` (``document`` = its keyword arguments) atomically to ``path``."""
    text = yaml.safe_dump(spec_document(**document), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


# -- polling -------------------------------------------------------------------------------------------
def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
    detail: Callable[[], Any] | None = None,
) -> Any:
    """Call ``condition`` until it returns something truthy (returned); bounded by attempts and time.
    On timeout the error shows ``detail()`` (e.g. the rollout status) when given."""
    attempts = max(int(timeout / interval) + 1, 1)
    deadline = time.monotonic() + timeout
    last: Any = None
    for _ in range(attempts):
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    extra = f"\n{detail()!r}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r}){extra}")


# -- the server ----------------------------------------------------------------------------------------
@dataclass
class UpServer:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    state_dir: Path
    spec: Path
    log_path: Path
    url: str = field(init=False)
    admin_url: str = field(init=False)
    _admin_client: httpx.Client | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}"
        self.admin_url = f"http://{HOST}:{self.admin_port}"

    @property
    def token(self) -> str:
        return str(json.loads((self.state_dir / "token.json").read_text())["token"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call the admin API with the state dir's token (or ``token``; ``""`` sends no Authorization)."""
        token = self.token if token is None else token
        hdrs = {"authorization": f"Bearer {token}"} if token else {}
        hdrs.update(headers or {})
        if self._admin_client is None:
            self._admin_client = httpx.Client(timeout=30)
        return self._admin_client.request(method, self.admin_url + path, json=body, headers=hdrs)

    def status(self) -> dict[str, Any]:
        resp = self.admin("GET", "/status")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    def rollout(self) -> dict[str, Any]:
        r: dict[str, Any] = self.status()["rollout"]
        return r

    def action(self, name: str, **body: Any) -> dict[str, Any]:
        resp = self.admin("POST", f"/{name}", body=body)
        assert resp.status_code == 200, f"{name}: {resp.status_code} {resp.text}"
        doc: dict[str, Any] = resp.json()
        return doc

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``); returns the exit code."""
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None
        return processes.stop(self.process, sig=sig, timeout=timeout)


def start_up(
    spec: Path,
    state_dir: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> UpServer:
    """Start ``ferryman up`` and return it once ready (the caller must ``stop()`` it)."""
    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    # the log lives beside the state dir (the test's tmp dir), so nothing outlives the test's temp tree
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix="ferryman-up-", suffix=".log", dir=state_dir.parent)
    full_env = dict(os.environ)
    full_env.pop("FERRYMAN_ADMIN_TOKEN", None)  # the token comes from the state dir, as for a user
    full_env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})})
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [
                *ferryman_command(),
                "up",
                str(spec),
                "--host",
                HOST,
                "--port",
                str(port),
                "--admin-port",
                str(admin_port),
                "--state-dir",
                str(state_dir),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    server = UpServer(
        process=process,
        port=port,
        admin_port=admin_port,
        state_dir=state_dir,
        spec=spec,
        log_path=Path(log_name),
    )
    try:
        wait_http(server.url + "/v2/health/ready", timeout=timeout, alive=server.alive)
        wait_until(lambda: _admin_ready(server), timeout=30, what="the admin API")
    except (ServerFailed, AssertionError) as err:
        server.stop(signal.SIGKILL)
        raise ServerFailed(f"{err}\n--- ferryman up output ---\n{server.output()}") from err
    return server


def _admin_ready(server: UpServer) -> bool:
    if not server.alive():
        raise ServerFailed("ferryman up exited")
    try:
        return server.admin("GET", "/status").status_code == 200
    except (httpx.TransportError, FileNotFoundError, KeyError, ValueError):
        return False


@contextlib.contextmanager
def ferryman_up(spec: Path, state_dir: Path, **kwargs: Any) -> Iterator[UpServer]:
    server = start_up(spec, state_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# -- clients -------------------------------------------------------------------------------------------
def v2_body(
    row: np.ndarray, *, extra: Mapping[str, Any] | None = None, request_id: str | None = None
) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [float(x) for x in row]}
    ]
    for name, value in (extra or {}).items():
        datatype = "BYTES" if isinstance(value, str) else "INT64"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    body: dict[str, Any] = {"inputs": inputs}
    if request_id is not None:
        body["id"] = request_id
    return body


@dataclass
class Reply:
    """An HTTP answer (the parts tests read)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A keep-alive HTTP/1.1 client for one gateway (``http.client``: half the CPU of httpx per request, which
    matters for thousands of requests on a busy 2-core box). Not thread-safe: one per thread."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        parsed = urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname or HOST, parsed.port, timeout=timeout)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Reply:
        payload = json.dumps(body).encode()
        hdrs = {"content-type": "application/json", **(headers or {})}
        try:
            self.conn.request("POST", path, body=payload, headers=hdrs)
            resp = self.conn.getresponse()
            return Reply(resp.status, resp.read())
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request reconnects
            raise

    def infer(
        self,
        row: np.ndarray,
        *,
        version: str | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Reply:
        path = INFER_PATH if version is None else f"/v2/models/{MODEL}/versions/{version}/infer"
        hdrs = dict(headers or {})
        if cookies:
            hdrs["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return self.post(path, v2_body(row, extra=extra, request_id=request_id), headers=hdrs)

    def version_of(self, row: np.ndarray, **kwargs: Any) -> str:
        """The ``model_version`` that answered; fails the test on anything but a 200."""
        resp = self.infer(row, **kwargs)
        assert resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text}"
        version: str = resp.json()["model_version"]
        return version


@dataclass
class Outcome:
    sent: float  # monotonic, when the request was sent
    received: float
    status: int  # 0 for a transport error
    version: str | None
    error: str = ""


class Load:
    """``threads`` clients sending one-row requests until :meth:`stop` (or ``max_requests``/``max_seconds``).

    ``pace`` seconds between a thread's requests keeps a long background load from burning the CPU that the
    server and the controller under test need (the box is small and shared)."""

    def __init__(
        self,
        url: str,
        rows: np.ndarray,
        *,
        threads: int = 4,
        max_requests: int = 200_000,
        max_seconds: float = 120.0,
        headers: Mapping[str, str] | None = None,
        pace: float = 0.0,
    ) -> None:
        self.url = url
        self.pace = pace
        self.rows = rows
        self.headers = dict(headers or {})
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.max_seconds + 60)
        return self.outcomes

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = index
        with Client(self.url) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                row = self.rows[n % len(self.rows)]
                n += len(self._threads)
                t0 = time.monotonic()
                try:
                    resp = client.infer(row, headers=self.headers)
                    version = resp.json().get("model_version") if resp.status_code == 200 else None
                    outcome = Outcome(
                        t0,
                        time.monotonic(),
                        resp.status_code,
                        version,
                        "" if resp.status_code == 200 else resp.text[:200],
                    )
                except (OSError, http.client.HTTPException, ValueError) as err:
                    outcome = Outcome(t0, time.monotonic(), 0, None, f"{type(err).__name__}: {err}")
                with self._lock:
                    self.outcomes.append(outcome)
                if self.pace:
                    self._stop.wait(self.pace)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def errors(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200 or o.version is None]

    def versions(self) -> Counter[str]:
        return Counter(o.version for o in self.snapshot() if o.version is not None)


def phase_reached(up: UpServer, phase: str) -> Callable[[], dict[str, Any] | None]:
    """A :func:`wait_until` condition: the rollout document once its phase is ``phase``."""

    def check() -> dict[str, Any] | None:
        r = up.rollout()
        return r if r["phase"] == phase else None

    return check


def traffic_rows(status: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The status document's exact accounting rows keyed by (version, route)."""
    return {(r["version"], r["route"]): r for r in status["traffic"]}


def actions(rollout: Mapping[str, Any]) -> list[str]:
    """The rollout history as a list of action names, oldest first."""
    return [h["action"] for h in rollout["history"]]


def arms_for(
    url: str,
    keys: Sequence[str],
    rows: np.ndarray,
    request: Callable[[str], dict[str, Any]],
    *,
    threads: int = 4,
) -> dict[str, str]:
    """Send one request per key (``request(key)`` gives :meth:`Client.infer` keyword arguments, e.g. a sticky
    header) from ``threads`` clients; return the version that answered each key."""
    out: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with Client(url) as client:
            for n in range(index, len(keys), threads):
                key = keys[n]
                resp = client.infer(rows[n % len(rows)], **request(key))
                with lock:
                    if resp.status_code == 200:
                        out[key] = resp.json()["model_version"]
                    else:
                        failures.append(f"{key}: HTTP {resp.status_code} {resp.text[:200]}")

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert failures == [], failures[:5]
    assert len(out) == len(keys)
    return out
