"""Model store: fetch an ONNX file from a URI into the local cache, verify it, hand back a local path.

Supported: plain paths, ``file://``, ``http(s)://`` and ``s3://``. A download whose sha256 is known and
already in the cache is not fetched again.
"""

from __future__ import annotations

from pathlib import Path

from ferryman.errors import ModelStoreError
from ferryman.store.base import Fetcher, cache_path, default_cache_dir, redact, sha256_of, verify_sha256
from ferryman.store.http import HttpFetcher
from ferryman.store.local import LocalFetcher
from ferryman.store.s3 import S3Fetcher

__all__ = ["Fetcher", "fetch", "fetcher_for", "redact", "sha256_of", "verify_sha256"]


def fetcher_for(uri: str) -> Fetcher:
    """The factory: interpret the URI scheme."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if scheme == "file":
        return LocalFetcher()
    if scheme in ("http", "https"):
        return HttpFetcher()
    if scheme == "s3":
        return S3Fetcher()
    raise ModelStoreError(
        f"{redact(uri)}: unsupported URI scheme {scheme!r} (use a path, file://, http(s):// or s3://)"
    )


def fetch(
    uri: str, *, sha256: str | None = None, cache_dir: Path | None = None, progress: bool = False
) -> Path:
    cache = cache_dir or default_cache_dir()
    fetcher = fetcher_for(uri)
    if sha256 is not None and not isinstance(fetcher, LocalFetcher):
        cached = cache_path(cache, uri)
        if cached.is_file() and sha256_of(cached) == sha256.lower():
            return cached
    path = fetcher.fetch(uri, cache_dir=cache, progress=progress)
    verify_sha256(path, sha256)
    return path
