"""The admin API of a real ``ferryman up``: token-guarded, audited, and on loopback unless told otherwise.

* No token, a wrong token, the token under another scheme or header → 401 ``{"error"}`` and nothing changes.
* Every action is logged by ``ferryman.audit`` with who (``X-Ferryman-Actor``, default ``admin``) and why
  (the ``reason``), and recorded in the rollout history; the token itself never reaches the log.
* The admin listener is bound to 127.0.0.1 (not a wildcard: 127.0.0.2 is refused) and the gateway port
  serves none of its routes; ``--admin-host 127.0.0.2`` moves it there, and the CLI follows ``admin.json``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.helpers.gateway import UpServer, ferryman_up
from tests.helpers.ports import free_port
from tests.helpers.security import ferryman_process
from tests.helpers.servers import run_ferryman

MODEL = "breast-cancer"


def canary_spec(path: Path, sample_models: Any) -> Path:
    doc = {
        "apiVersion": "serving.ferryman.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "versions": [{"name": v, "uri": str(sample_models.versions[v])} for v in ("v1", "v2")],
            "traffic": {
                "strategy": "canary",
                "stable": "v1",
                "candidate": "v2",
                "canary": {"steps": [10, 50, 100], "intervalSeconds": 3600},
            },
            "drift": {"enabled": False},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def up(sample_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    d = tmp_path_factory.mktemp("admin-sec")
    with ferryman_up(canary_spec(d / "deployment.yaml", sample_models), d / "state") as server:
        yield server


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_no_token_or_a_wrong_one_is_401_and_changes_nothing(up: UpServer) -> None:
    before = up.rollout()
    token = up.token
    attempts: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer " + "x" * len(token)},
        {"authorization": f"Bearer {token}x"},
        {"authorization": f"Bearer {token[:-1]}"},
        {"authorization": f"Basic {token}"},
        {"authorization": token},
        {"x-api-key": token},
    ]
    with httpx.Client(base_url=up.admin_url, timeout=30) as c:
        for headers in attempts:
            for method, path, body in (
                ("GET", "/status", None),
                ("POST", "/pause", {"reason": "r"}),
                ("POST", "/promote", {}),
                ("POST", "/reload", {}),
                ("POST", "/feedback", {"id": "x", "label": 1}),
            ):
                resp = c.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401, (headers, path, resp.text)
                assert "admin token" in resp.json()["error"]
    after = up.rollout()
    assert after["phase"] == before["phase"] == "Progressing"
    assert after["history"] == before["history"]
    assert up.admin("GET", "/status").status_code == 200


def test_actions_are_audited_with_actor_and_reason(up: UpServer) -> None:
    resp = up.admin(
        "POST", "/pause", body={"reason": "incident 4711: p99 alert"}, headers={"x-ferryman-actor": "alice"}
    )
    assert resp.status_code == 200, resp.text
    resp = up.admin("POST", "/resume", body={})
    assert resp.status_code == 200, resp.text
    resp = up.admin("POST", "/reload", body={}, headers={"x-ferryman-actor": "bob"})
    assert resp.status_code == 200, resp.text

    history = up.rollout()["history"]
    pause = next(h for h in history if h["action"] == "pause")
    resume = next(h for h in history if h["action"] == "resume")
    assert (pause["actor"], pause["reason"]) == ("alice", "incident 4711: p99 alert")
    assert (resume["actor"], resume["reason"]) == ("admin", "resume requested by admin")

    audit = [line for line in up.output().splitlines() if "ferryman.audit" in line]
    assert any(
        "action=pause" in line and "actor=alice" in line and "incident 4711: p99 alert" in line
        for line in audit
    ), audit
    assert any(
        "action=resume" in line and "actor=admin" in line and "resume requested by admin" in line
        for line in audit
    ), audit
    assert any("action=reload" in line and "actor=bob" in line for line in audit), audit
    assert up.token not in up.output()


def test_admin_listens_on_loopback_only(up: UpServer) -> None:
    info = json.loads((up.state_dir / "admin.json").read_text())
    assert info["url"] == f"http://127.0.0.1:{up.admin_port}"
    proc = psutil.Process(up.process.pid)
    connections = getattr(proc, "net_connections", None) or proc.connections  # psutil >= 6 renamed it
    listening = {
        (c.laddr.ip, c.laddr.port) for c in connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", up.admin_port) in listening
    assert not any(port == up.admin_port and ip != "127.0.0.1" for ip, port in listening), listening
    assert _refused("127.0.0.2", up.admin_port)  # bound to one loopback address, not a wildcard
    # the data-plane port serves none of the control routes, with or without the token
    headers = {"authorization": f"Bearer {up.token}"}
    for method, path in (
        ("GET", "/status"),
        ("POST", "/promote"),
        ("POST", "/rollback"),
        ("POST", "/reload"),
        ("POST", "/feedback"),
    ):
        resp = httpx.request(method, up.url + path, headers=headers, json={}, timeout=10)
        assert resp.status_code == 404, (path, resp.status_code)
    assert up.rollout()["phase"] == "Progressing"


def test_admin_host_flag_moves_the_listener(sample_models: Any, tmp_path: Path) -> None:
    spec = canary_spec(tmp_path / "deployment.yaml", sample_models)
    state = tmp_path / "state"
    port, admin_port = free_port(), free_port()
    args = [
        "up",
        str(spec),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--admin-host",
        "127.0.0.2",
        "--admin-port",
        str(admin_port),
        "--state-dir",
        str(state),
    ]
    with ferryman_process(args, port=port):
        token = json.loads((state / "token.json").read_text())["token"]
        assert (state / "token.json").stat().st_mode & 0o077 == 0  # the token file is private
        resp = httpx.get(
            f"http://127.0.0.2:{admin_port}/status", headers={"authorization": f"Bearer {token}"}, timeout=10
        )
        assert resp.status_code == 200
        assert httpx.get(f"http://127.0.0.2:{admin_port}/status", timeout=10).status_code == 401
        assert _refused("127.0.0.1", admin_port)
        assert json.loads((state / "admin.json").read_text())["url"] == f"http://127.0.0.2:{admin_port}"
        result = run_ferryman(["status", "--json", "--state-dir", str(state)], timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["rollout"]["phase"] == "Progressing"
