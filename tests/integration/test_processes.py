"""ferryman.processes against real processes and sockets: start one with its log, wait until it answers
HTTP, stop it (a clean SIGTERM, a process that ignores it, a whole group, a process that is not our child),
and ports below the ephemeral range."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ferryman import processes
from ferryman.processes import ServerFailed

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(600)"
)


def _wait_line(path: Path, text: str) -> None:
    for _ in range(600):
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text(errors='replace')!r}")


def test_a_started_server_is_waited_for_and_stopped_cleanly(tmp_path: Path) -> None:
    (tmp_path / "ready").write_text("ok")
    port = processes.free_port()
    log = tmp_path / "server.log"
    server = processes.start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        log_path=log,
    )
    try:
        answer = processes.wait_http(
            f"http://127.0.0.1:{port}/ready", timeout=60, alive=lambda: server.poll() is None
        )
        assert answer.text == "ok"
        with pytest.raises(ServerFailed, match=r"did not answer 200 .*HTTP 404"):
            processes.wait_http(f"http://127.0.0.1:{port}/missing", timeout=0.5)
    finally:
        code = processes.stop(server)
    assert code == -signal.SIGTERM and server.poll() is not None
    assert "GET /ready" in log.read_text()


def test_waiting_ends_when_the_server_exits(tmp_path: Path) -> None:
    port = processes.free_port()
    dead = processes.start([sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "log")
    with pytest.raises(ServerFailed, match="the server exited while waiting"):
        processes.wait_http(f"http://127.0.0.1:{port}/", timeout=600, alive=lambda: dead.poll() is None)
    assert dead.returncode == 3


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    stubborn = processes.start([sys.executable, "-c", IGNORES_TERM], log_path=log)
    _wait_line(log, "up")
    assert processes.stop(stubborn, timeout=0.5) == -signal.SIGKILL


def test_a_group_is_stopped_whole(tmp_path: Path) -> None:
    """The leader exits on SIGTERM; its child ignores it and is killed with the rest of the group."""
    log = tmp_path / "log"
    leader = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {IGNORES_TERM!r}])
        print("child", child.pid, flush=True)
        time.sleep(600)
    """)
    process = processes.start([sys.executable, "-c", leader], log_path=log, new_session=True)
    _wait_line(log, "up")
    child = int(log.read_text().split("child ")[1].split()[0])
    assert processes.pid_alive(child)
    processes.stop(process, group=True, timeout=10)
    for _ in range(200):  # killed; a zombie until init reaps it, which pid_alive counts as gone
        if not processes.pid_alive(child):
            break
        time.sleep(0.05)
    assert not processes.pid_alive(child)


def test_stop_pid_stops_a_process_that_is_not_our_child(tmp_path: Path) -> None:
    log = tmp_path / "log"
    # the shell starts two grandchildren and exits: they are not ours to wait for
    shell = subprocess.run(
        [
            "sh",
            "-c",
            f"{sys.executable} -c 'import time; time.sleep(600)' >/dev/null 2>&1 & echo $!; "
            f'{sys.executable} -c "{IGNORES_TERM}" >{log} 2>&1 & echo $!',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    polite, stubborn = (int(pid) for pid in shell.stdout.split())
    _wait_line(log, "up")
    assert processes.stop_pid(polite) is False  # ended by SIGTERM
    assert processes.stop_pid(stubborn, timeout=0.5) is True  # had to be killed
    assert not processes.pid_alive(polite) and not processes.pid_alive(stubborn)


def test_ports_below_the_ephemeral_range_are_free_and_consecutive() -> None:
    first = processes.free_port_below_ephemeral(count=3)
    assert first >= 20_000 and first + 3 <= processes.ephemeral_range_start()
    for port in range(first, first + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: binds
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        assert not processes.port_is_free("127.0.0.1", first)
    with pytest.raises(ServerFailed, match="no 2 consecutive free ports"):
        processes.free_port_below_ephemeral(count=2, lowest=processes.ephemeral_range_start())
