"""TLS for the gateway and the native server: certificate and key from files, reloaded when they change.

    opts.update(tls_options(cert="/tls/tls.crt", key="/tls/tls.key"))   # -> uvicorn.Config(**opts)

uvicorn builds its ``ssl.SSLContext`` through our :class:`TlsContextFactory` (``ssl_context_factory``),
in every worker process, inside the worker's event loop. The factory makes a server context (TLS 1.2 or
newer, the default cipher policy), loads the pair, and schedules a :class:`CertReloader` on that loop:
every ``check_seconds`` it stats both files (following symlinks, so a Kubernetes Secret's atomic swap counts)
and, when they changed, first loads the new pair into a scratch context — a certificate that does not
match its key, or a half-written file, is reported and the old pair keeps serving — then calls
``load_cert_chain`` again on the live context. New handshakes get the new certificate; open connections
keep theirs. No restart, no dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferryman.errors import FerrymanError

log = logging.getLogger("ferryman.tls")

CHECK_SECONDS = 1.0


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server-side context (TLS >= 1.2) holding the pair; raises ``ssl.SSLError``/``OSError`` if
    unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


class CertReloader:
    """Keeps ``context`` loaded with the current content of ``cert`` and ``key``."""

    def __init__(
        self, context: ssl.SSLContext, *, cert: Path, key: Path, check_seconds: float = CHECK_SECONDS
    ) -> None:
        self.context = context
        self.cert = cert
        self.key = key
        self.check_seconds = check_seconds
        self.loaded = _signature(cert, key)
        self._failed: object = None
        self._handle: asyncio.TimerHandle | None = None
        self.reloads = 0

    def check(self) -> bool:
        """Reload if the files changed and the new pair is valid; True when the live context was updated."""
        seen = _signature(self.cert, self.key)
        if seen is None or seen == self.loaded:
            return False
        try:
            server_context(self.cert, self.key)  # validate first: a bad pair must not touch the live context
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as err:
            if seen != self._failed:
                log.error(
                    "TLS certificate %s / key %s changed but cannot be loaded (%s); still serving the "
                    "previous certificate",
                    self.cert,
                    self.key,
                    type(err).__name__,
                )
                self._failed = seen
            return False
        self.loaded = seen
        self._failed = None
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check every ``check_seconds`` on ``loop`` (the server's own loop: no thread touches the
        context)."""

        def tick() -> None:
            try:
                self.check()
            except Exception:  # never let a reload bug stop the watch
                log.exception("TLS certificate check failed")
            self._handle = loop.call_later(self.check_seconds, tick)

        self._handle = loop.call_later(self.check_seconds, tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass(frozen=True)
class TlsContextFactory:
    """uvicorn ``ssl_context_factory``: picklable (plain paths), so multi-worker mode can spawn it."""

    cert: Path
    key: Path
    check_seconds: float = CHECK_SECONDS

    def __call__(self, config: Any, default_factory: Any) -> ssl.SSLContext:
        context = server_context(self.cert, self.key)
        reloader = CertReloader(context, cert=self.cert, key=self.key, check_seconds=self.check_seconds)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("TLS context built outside an event loop: certificate hot reload is off")
        else:
            reloader.start(loop)
        return context


def tls_options(
    *, cert: str | Path | None, key: str | Path | None, check_seconds: float = CHECK_SECONDS
) -> dict[str, Any]:
    """uvicorn options for TLS (empty without a certificate); checks the pair now, with a clear error."""
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise FerrymanError("TLS needs both --tls-cert and --tls-key")
    cert_path, key_path = Path(cert).resolve(), Path(key).resolve()
    for what, p in (("certificate", cert_path), ("key", key_path)):
        if not p.is_file():
            raise FerrymanError(f"TLS {what} {p} does not exist")
    try:
        server_context(cert_path, key_path)
    except (ssl.SSLError, OSError) as err:
        raise FerrymanError(f"TLS certificate {cert_path} / key {key_path} cannot be loaded: {err}") from err
    return {
        "ssl_certfile": str(cert_path),
        "ssl_keyfile": str(key_path),
        "ssl_context_factory": TlsContextFactory(cert_path, key_path, check_seconds),
    }
