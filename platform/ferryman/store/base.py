"""The model-store interface: one small protocol, one file per scheme, one factory (``store.fetcher_for``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from ferryman.errors import ModelStoreError

CHUNK = 1 << 20


class Fetcher(Protocol):
    """Makes the object at a URI available as a local file and returns its path."""

    def fetch(self, uri: str, *, cache_dir: Path, progress: bool) -> Path: ...


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ModelStoreError(f"{path}: checksum mismatch (expected sha256 {expected}, got {actual})")


def cache_path(cache_dir: Path, uri: str) -> Path:
    """A stable per-URI location inside the cache (the file keeps its base name for readability)."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    name = os.path.basename(uri.split("?", 1)[0].rstrip("/")) or "model.onnx"
    return cache_dir / key / name


def default_cache_dir() -> Path:
    root = os.environ.get("FERRYMAN_MODEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferryman" / "models"


def redact(uri: str) -> str:
    """Hide credentials embedded in a URI: user info (``https://user:secret@host/...``) and every query value
    (pre-signed S3/GCS URLs and SAS tokens carry their signature there: ``?X-Amz-Signature=***``)."""
    if "://" not in uri:
        return uri
    if "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        uri = f"{scheme}://***@{rest.split('@', 1)[1]}"
    if "?" in uri:
        base, _, query = uri.partition("?")
        query = query.split("#", 1)[0]
        uri = (
            base
            + "?"
            + "&".join(
                f"{part.split('=', 1)[0]}=***" if "=" in part else "***" for part in query.split("&") if part
            )
        )
    return uri
