"""Atomic JSON state files: a torn write never replaces the real file; a corrupt file is moved aside."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferryman.statefile import read_json, write_json


def test_round_trip_private_and_no_temp_files_left(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.json"
    write_json(path, {"phase": "Progressing", "weights": {"v1": 90, "v2": 10}})
    assert read_json(path) == {"phase": "Progressing", "weights": {"v1": 90, "v2": 10}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_json(path, {"phase": "Promoted"})
    assert read_json(path) == {"phase": "Promoted"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json") is None


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"step": 1})
    # json.dump streams: the first keys reach the temp file before the unserialisable value raises
    with pytest.raises(TypeError):
        write_json(path, {"a": "x" * 100_000, "b": object()})
    assert read_json(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_torn_temp_file_from_a_crash_is_never_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"step": 2})
    (tmp_path / ".state.json.abc123").write_text('{"step": 3, "wei')  # what kill -9 mid-write leaves
    assert read_json(path) == {"step": 2}
    write_json(path, {"step": 3})
    assert read_json(path) == {"step": 3}


@pytest.mark.parametrize(
    "content", [b'{"phase": "Progre', b"", b"\xff\xfe\x00garbage\x9c", b"not json at all"]
)
def test_a_corrupt_file_is_moved_aside_and_reads_as_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    assert read_json(path) is None
    assert not path.exists()
    assert (tmp_path / "state.json.corrupt-0").read_bytes() == content
    path.write_bytes(content)
    assert read_json(path) is None
    assert (tmp_path / "state.json.corrupt-1").read_bytes() == content  # earlier evidence is kept
    write_json(path, {"fresh": True})
    assert read_json(path) == {"fresh": True}


WRITER = """
import sys
from pathlib import Path
from ferryman.statefile import write_json
path = Path(sys.argv[1])
n = 0
print("ready", flush=True)
while True:
    n += 1
    write_json(path, {"n": n, "pad": "x" * 200_000})
"""


def test_sigkill_during_continuous_writes_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 20
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05 + 0.03 * attempt)  # somewhere in the middle of a write
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        raw = path.read_bytes()
        doc = json.loads(raw)  # always a whole document, old or new
        assert doc["pad"] == "x" * 200_000 and doc["n"] >= 1
        assert read_json(path) == doc
