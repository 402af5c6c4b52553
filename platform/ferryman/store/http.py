"""``http://`` and ``https://`` downloads, streamed into the cache with a progress bar."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx

from ferryman.errors import ModelStoreError
from ferryman.store.base import cache_path, redact
from ferryman.store.progress import download_progress


class HttpFetcher:
    def __init__(self, *, timeout: float = 60.0) -> None:
        self.timeout = timeout

    def fetch(self, uri: str, *, cache_dir: Path, progress: bool) -> Path:
        dest = cache_path(cache_dir, uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with httpx.stream("GET", uri, timeout=self.timeout, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise ModelStoreError(f"{redact(uri)}: download failed with HTTP {resp.status_code}")
                total = int(resp.headers.get("content-length", 0)) or None
                with (
                    os.fdopen(fd, "wb") as out,
                    download_progress(dest.name, total, enabled=progress) as advance,
                ):
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        advance(len(chunk))
            os.replace(tmp, dest)
        except httpx.HTTPError as err:
            raise ModelStoreError(f"{redact(uri)}: download failed: {type(err).__name__}") from err
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest
