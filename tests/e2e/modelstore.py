"""Model files for the pods, served from host processes bound to the node's bridge address (NODE_IP).

* :func:`model_store` — context manager: an HTTP file server over ``directory`` and a moto S3 server (the
  ``moto`` package, a real S3 API over HTTP) with every file of ``directory`` uploaded to one bucket, both
  listening on ``host``; yields a :class:`ModelStore` (``.http(rel)``, ``.s3(rel)``, ``.s3_endpoint``,
  ``.env`` = the version servers' environment for S3: endpoint, region and the access keys moto accepts).

Pods reach NODE_IP through the bridge; nothing listens beyond this machine.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET = "ferryman-models"
REGION = "us-east-1"
ACCESS_KEY = "ferryman-e2e"
SECRET_KEY = "ferryman-e2e-secret"
SECRET_NAME = "model-store-s3"  # the Secret with the keys, created in each test namespace


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class ModelStore:
    http_base: str
    s3_endpoint: str
    requests: list[str] = field(default_factory=list)

    def http(self, rel: str) -> str:
        return f"{self.http_base}/{rel.lstrip('/')}"

    @staticmethod
    def s3(rel: str) -> str:
        return f"s3://{BUCKET}/{rel.lstrip('/')}"

    def workload_env(self) -> list[dict[str, Any]]:
        """The chart's ``workloads.env``: the endpoint in plain text, the keys from the namespace's Secret."""

        def secret(key: str) -> dict[str, Any]:
            return {"valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key, "optional": True}}}

        return [
            {"name": "AWS_ENDPOINT_URL", "value": self.s3_endpoint},
            {"name": "AWS_DEFAULT_REGION", "value": REGION},
            {"name": "AWS_ACCESS_KEY_ID", **secret("accessKey")},
            {"name": "AWS_SECRET_ACCESS_KEY", **secret("secretKey")},
        ]

    @staticmethod
    def secret(namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": SECRET_NAME, "namespace": namespace},
            "stringData": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY},
        }


def _upload(endpoint: str, directory: Path) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, path.relative_to(directory).as_posix())


@contextlib.contextmanager
def model_store(directory: Path, *, host: str) -> Iterator[ModelStore]:
    from moto.server import ThreadedMotoServer

    handler = functools.partial(_Quiet, directory=str(directory))
    files = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=files.serve_forever, daemon=True, name="e2e-model-files")
    thread.start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    s3 = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    s3.start()
    try:
        s3_host, s3_port = s3.get_host_and_port()
        endpoint = f"http://{s3_host}:{s3_port}"
        _upload(endpoint, directory)
        yield ModelStore(http_base=f"http://{host}:{files.server_address[1]}", s3_endpoint=endpoint)
    finally:
        s3.stop()
        files.shutdown()
        files.server_close()
        thread.join(timeout=10)
