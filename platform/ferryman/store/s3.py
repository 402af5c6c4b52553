"""``s3://bucket/key`` downloads with boto3 (endpoint from ``AWS_ENDPOINT_URL`` or
``FERRYMAN_S3_ENDPOINT``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ferryman.errors import ModelStoreError
from ferryman.store.base import cache_path, redact
from ferryman.store.progress import download_progress


def _client() -> Any:
    import boto3  # imported lazily: only S3 users need it
    from botocore.config import Config

    endpoint = os.environ.get("FERRYMAN_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 3}))


class S3Fetcher:
    def fetch(self, uri: str, *, cache_dir: Path, progress: bool) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise ModelStoreError(f"{redact(uri)}: expected s3://bucket/key")
        dest = cache_path(cache_dir, uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        try:
            client = _client()
            size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            with download_progress(dest.name, size, enabled=progress) as advance:
                client.download_file(bucket, key, tmp, Callback=advance)
            os.replace(tmp, dest)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "error")
            raise ModelStoreError(f"{redact(uri)}: S3 {code}") from err
        except BotoCoreError as err:
            raise ModelStoreError(f"{redact(uri)}: S3 failure: {type(err).__name__}") from err
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest
