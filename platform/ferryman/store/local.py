"""Plain paths and ``file://`` URIs: no copy, just existence checks."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from ferryman.errors import ModelStoreError


class LocalFetcher:
    def fetch(self, uri: str, *, cache_dir: Path, progress: bool) -> Path:
        path = Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)
        if not path.is_file():
            raise ModelStoreError(f"{path}: model file not found")
        return path
