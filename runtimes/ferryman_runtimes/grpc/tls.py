"""TLS for the gRPC listener with the REST listener's certificate reload (``ferryman_runtimes.asgi.tls``).

gRPC asks :class:`CertificateWatch` for a new certificate before each handshake (``dynamic_ssl_server_
credentials``); at most every ``check_seconds`` it stats both files (following symlinks: a Kubernetes
Secret's swap counts) and, when they changed, validates the new pair the way the REST listener does before
handing it over. A certificate that does not match its key, or a half-written file, is logged and the old
pair keeps serving. New handshakes get the new certificate; open connections keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from ferryman_runtimes.asgi.tls import CHECK_SECONDS, server_context

log = logging.getLogger("ferryman.grpc.tls")


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


def _configuration(cert: Path, key: Path) -> Any:
    return grpc.ssl_server_certificate_configuration([(key.read_bytes(), cert.read_bytes())])


class CertificateWatch:
    """gRPC's certificate-configuration fetcher: a new configuration when the pair changed and is valid."""

    def __init__(self, *, cert: Path, key: Path, check_seconds: float = CHECK_SECONDS) -> None:
        self.cert = cert
        self.key = key
        self.check_seconds = check_seconds
        self.loaded = _signature(cert, key)
        self._failed: object = None
        self._next = 0.0
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self.reloads = 0

    def __call__(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + self.check_seconds
            seen = _signature(self.cert, self.key)
            if seen is None or seen == self.loaded:
                return None
            try:
                server_context(
                    self.cert, self.key
                )  # the pair must load (and match) before it replaces the old one
                configuration = _configuration(self.cert, self.key)
            except (ssl.SSLError, OSError) as err:
                if seen != self._failed:
                    log.error(
                        "TLS certificate %s / key %s changed but cannot be loaded (%s); gRPC still serves "
                        "the previous certificate",
                        self.cert,
                        self.key,
                        type(err).__name__,
                    )
                    self._failed = seen
                return None
            self.loaded = seen
            self._failed = None
            self.reloads += 1
            log.info("gRPC TLS certificate reloaded from %s", self.cert)
            return configuration


def server_credentials(*, cert: str | Path, key: str | Path, check_seconds: float = CHECK_SECONDS) -> Any:
    """Server credentials for the pair, re-read when it changes (checked like ``asgi.tls.tls_options``)."""
    cert_path, key_path = Path(cert).resolve(), Path(key).resolve()
    server_context(cert_path, key_path)
    watch = CertificateWatch(cert=cert_path, key=key_path, check_seconds=check_seconds)
    return grpc.dynamic_ssl_server_credentials(
        _configuration(cert_path, key_path), watch, require_client_authentication=False
    )
