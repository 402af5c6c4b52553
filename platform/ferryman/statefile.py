"""Atomic JSON state files: write to a temp file, fsync, rename, fsync the directory.

A crash mid-write leaves either the old file or the new one, never a torn mix. A file that is
unreadable anyway (disk corruption, a hand edit) is moved aside as ``*.corrupt-<n>`` and reported.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("ferryman.state")


def write_json(path: Path, data: Any, *, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The parsed content, or None when the file is missing or corrupt (a corrupt file is set aside)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for binary garbage
        n = 0
        while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
            n += 1
        os.replace(path, aside)
        log.error("state file %s was corrupt; moved to %s and starting fresh", path, aside)
        return None
