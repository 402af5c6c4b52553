"""The rollout driven on a local Ray instance (``ferryman up SPEC --runtime ray``): real Ray, real HTTP.

``start_local(..., extra_args=["--state-dir", D, "--admin-port", A])`` runs the launcher behind
``ferryman up --runtime ray`` with the driver on: the ingress replica ships its finished requests to the
stats hub actor, the gateway's ``RolloutController`` ticks on them and applies each step as a new ingress
``user_config``, and the gateway's admin API listens on ``A``. Traffic goes straight to the ingress.

Each test starts its own Ray instance (10-60 s on this box), hence ``slow``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ferryman_runtimes.ray.local import LocalRay, start_local
from tests.helpers.gateway import Client, Load, actions, traffic_rows, wait_until, write_spec
from tests.helpers.ports import free_port, free_port_below_ephemeral
from tests.helpers.servers import run_ferryman

pytestmark = pytest.mark.slow

TOKEN = "ray-rollout-test-token-0123456789"
ENV = {"FERRYMAN_ADMIN_TOKEN": TOKEN, "USER": "tester"}


class RayUp:
    """A driven local Ray instance and its admin API."""

    def __init__(self, server: LocalRay, *, admin_port: int, state_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.state_dir = state_dir
        self.client = httpx.Client(timeout=30, headers={"authorization": f"Bearer {TOKEN}"})

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.client.request(method, self.admin_url + path, json=body)

    def status(self) -> dict[str, Any]:
        resp = self.admin("GET", "/status")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    def rollout(self) -> dict[str, Any]:
        r: dict[str, Any] = self.status()["rollout"]
        return r

    def cli(self, *args: str) -> str:
        done = run_ferryman([*args, "--state-dir", str(self.state_dir)], env=ENV)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr  # actions report on stderr, `status --json` on stdout

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _ports() -> tuple[int, int]:
    port = free_port_below_ephemeral(count=2)  # the ingress may take port and port + 1 (direct-ingress range)
    admin = free_port()
    while port <= admin <= port + 2:
        admin = free_port()
    return port, admin


def start_driven(spec: Path, state_dir: Path) -> RayUp:
    port, admin_port = _ports()
    server = start_local(
        spec, port, env=ENV, extra_args=["--state-dir", str(state_dir), "--admin-port", str(admin_port)]
    )
    up = RayUp(server, admin_port=admin_port, state_dir=state_dir)
    try:
        wait_until(lambda: _answers(up), timeout=60, what="the admin API")
    except BaseException:
        print(server.output()[-4000:])
        up.close()
        raise
    return up


def _answers(up: RayUp) -> bool:
    try:
        return up.admin("GET", "/status").status_code == 200
    except httpx.TransportError:
        return False


def canary(sample_models, path: Path, *, steps: list[int], interval: float) -> Path:
    return write_spec(
        path,
        versions=sample_models.versions,
        budget={"p99Ms": 250, "maxErrorRate": 0.01},
        traffic={
            "strategy": "canary",
            "stable": "v1",
            "candidate": "v2",
            "canary": {"steps": steps, "intervalSeconds": interval, "failureThreshold": 3, "minRequests": 20},
        },
    )


def versions_seen(url: str, rows: np.ndarray, n: int) -> Counter[str]:
    with Client(url) as c:
        return Counter(c.version_of(rows[i % len(rows)]) for i in range(n))


@pytest.fixture
def advancing(sample_models, tmp_path: Path) -> Iterator[RayUp]:
    spec = canary(sample_models, tmp_path / "deployment.yaml", steps=[20, 50, 100], interval=2.0)
    up = start_driven(spec, tmp_path / "state")
    try:
        yield up
    finally:
        up.close()


def test_traffic_advances_the_canary_to_promotion(advancing: RayUp, traffic: np.ndarray) -> None:
    up = advancing
    first = up.rollout()
    assert (first["phase"], first["weights"]) == ("Progressing", {"v1": 80, "v2": 20})

    with Load(up.url, traffic, threads=2, max_seconds=180, pace=0.005) as load:
        promoted = wait_until(
            lambda: (r := up.rollout())["phase"] == "Promoted" and r,
            timeout=180,
            interval=0.5,
            what="the promotion",
            detail=up.rollout,
        )
    outcomes = load.outcomes
    assert [o for o in outcomes if o.status != 200] == []
    assert actions(promoted).count("advance") == 2 and actions(promoted)[-1] == "promote", actions(promoted)
    assert [h["weights"] for h in promoted["history"] if h["action"] in ("start", "advance", "promote")] == [
        {"v1": 80, "v2": 20},
        {"v1": 50, "v2": 50},
        {"v2": 100},
        {"v2": 100},
    ]
    assert promoted["stable"] == "v2" and promoted["weights"] == {"v2": 100}
    seen = Counter(o.version for o in outcomes)
    assert seen["v1"] > 0 and seen["v2"] > 0

    # the hub accounted every answer the clients got, exactly, once the last batch has been shipped
    def accounted() -> int:
        return sum(r["requests"] for r in up.status()["traffic"])

    wait_until(
        lambda: accounted() == len(outcomes),
        timeout=10,
        what="every request in the accounting",
        detail=accounted,
    )
    rows = traffic_rows(up.status())
    per_version: Counter[str] = Counter()
    for (version, _route), row in rows.items():
        per_version[version] += row["requests"]
        assert row["errors"] == 0 and row["p99Ms"] is not None
    assert per_version == seen  # v2 answered as "candidate" while stepping, as "stable" once promoted

    # the ingress now sends everything to v2, and the CLI reads the same status
    assert versions_seen(up.url, traffic, 40) == Counter({"v2": 40})
    done = run_ferryman(["status", "--json", "--state-dir", str(up.state_dir)], env=ENV)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["rollout"]["phase"] == "Promoted"


@pytest.fixture
def held(sample_models, tmp_path: Path) -> Iterator[tuple[RayUp, Path, Path]]:
    spec = canary(sample_models, tmp_path / "deployment.yaml", steps=[30, 100], interval=86_400)
    up = start_driven(spec, tmp_path / "state")
    try:
        yield up, spec, tmp_path / "state"
    finally:
        up.close()


def test_rollback_returns_all_traffic_to_stable_and_a_restart_resumes(
    held: tuple[RayUp, Path, Path], traffic: np.ndarray
) -> None:
    up, spec, state_dir = held
    seen = versions_seen(up.url, traffic, 200)
    assert set(seen) == {"v1", "v2"} and 30 <= seen["v2"] <= 95, seen  # 30 % of 200, 4 sd either side

    assert "pause" in up.cli("pause", "--reason", "looking into it")
    assert up.rollout()["phase"] == "Paused"
    assert httpx.get(up.admin_url + "/status").status_code == 401  # the token is required

    with Load(up.url, traffic, threads=2, max_seconds=60, pace=0.005) as load:
        resp = up.admin("POST", "/rollback", {"reason": "v2 looks wrong"})
        assert resp.status_code == 200, resp.text
        decision = resp.json()["decision"]
        assert (decision["action"], decision["weights"], decision["actor"]) == (
            "rollback",
            {"v1": 100},
            "admin",
        )
        wait_until(
            lambda: versions_seen(up.url, traffic, 30) == Counter({"v1": 30}),
            timeout=20,
            what="all traffic on v1",
        )
    assert load.errors() == []  # no request failed across the switch
    rollout = up.rollout()
    assert (rollout["phase"], rollout["stable"], rollout["weights"]) == ("RolledBack", "v1", {"v1": 100})
    assert versions_seen(up.url, traffic, 100) == Counter({"v1": 100})

    # a restart deploys the saved state's split from the start
    up.close()
    again = start_driven(spec, state_dir)
    try:
        resumed = again.rollout()
        assert (resumed["phase"], resumed["weights"]) == ("RolledBack", {"v1": 100})
        assert actions(resumed)[-1] == "rollback"
        assert versions_seen(again.url, traffic, 100) == Counter({"v1": 100})
    finally:
        again.close()
