"""Security test helpers: certificates, API-key files and Secret dirs, ferryman processes over HTTPS, raw
sockets.

* :func:`make_ca` / :func:`issue_cert` — a throwaway CA and 127.0.0.1 server certificates (``cryptography``).
* :func:`served_fingerprint` — SHA-256 of the certificate a TLS server presents right now (a new handshake).
* :func:`write_atomically` — temp file + rename, like a careful tool (or ``kubectl`` updating a file).
* :func:`secret_dir` / :func:`rotate_secret` — a directory laid out like a mounted Kubernetes Secret
  (``..<timestamp>/`` data dirs, a ``..data`` symlink swapped atomically, one symlink per key).
* :func:`ferryman_process` — run any ``ferryman`` command on a free port and wait for a URL (https allowed).
* :func:`raw_exchange` — send bytes on a plain socket (optionally trickling more) and read the answer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferryman.processes import ServerFailed, stop, wait_http
from tests.helpers.servers import HOST, ferryman_command


# -- certificates ----------------------------------------------------------------------------------------
@dataclass
class Authority:
    cert_path: Path
    cert: Any  # cryptography x509.Certificate
    key: Any


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def make_ca(directory: Path, name: str = "ferryman test CA") -> Authority:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(path, cert, key)


def issue_cert(ca: Authority, *, host: str = HOST) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for ``host`` (an IP SAN), signed by ``ca``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def pem_fingerprint(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


def served_fingerprint(port: int, *, host: str = HOST, timeout: float = 10.0) -> str:
    """The SHA-256 of the certificate the server presents on a fresh handshake (no verification)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def client_context(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_path))


# -- files -----------------------------------------------------------------------------------------------
def write_atomically(path: Path, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)


def secret_dir(path: Path, files: Mapping[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: ``name -> ..data/name``, ``..data -> ..<ts>``."""
    path.mkdir(parents=True, exist_ok=True)
    rotate_secret(path, files)
    return path


def rotate_secret(path: Path, files: Mapping[str, str]) -> None:
    """Update the mounted Secret as the kubelet does: new data dir, atomic ``..data`` swap, old dir
    removed."""
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    data = path / stamp
    data.mkdir()
    for name, content in files.items():
        (data / name).write_text(content)
    old = os.readlink(path / "..data") if (path / "..data").is_symlink() else None
    tmp_link = path / "..data_tmp"
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, path / "..data")
    for name in files:
        link = path / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for entry in list(path.iterdir()):
        if not entry.name.startswith(".") and entry.is_symlink() and entry.name not in files:
            entry.unlink()
    if old:
        for f in (path / old).iterdir():
            f.unlink()
        (path / old).rmdir()


# -- processes -------------------------------------------------------------------------------------------
@dataclass
class Process:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    url: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def wait_ready(
    url: str,
    *,
    verify: Any = True,
    timeout: float = 90.0,
    alive: Callable[[], bool] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    wait_http(url, verify=verify, timeout=timeout, alive=alive, headers=headers)


@contextlib.contextmanager
def ferryman_process(
    args: Sequence[str],
    *,
    port: int,
    scheme: str = "http",
    verify: Any = True,
    ready_path: str = "/v2/health/ready",
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> Iterator[Process]:
    """``ferryman ARGS`` (which must listen on ``port``), yielded once ``ready_path`` answers 200; stopped
    after."""
    fd, log_name = tempfile.mkstemp(prefix="ferryman-sec-", suffix=".log")
    full_env = dict(os.environ)
    full_env.pop("FERRYMAN_ADMIN_TOKEN", None)
    full_env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})})
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [*ferryman_command(), *args], stdout=log, stderr=subprocess.STDOUT, env=full_env
        )
    proc = Process(process, Path(log_name), port, f"{scheme}://{HOST}:{port}")
    try:
        try:
            wait_ready(proc.url + ready_path, verify=verify, timeout=timeout, alive=proc.alive)
        except ServerFailed as err:
            raise ServerFailed(f"{err}\n--- output ---\n{proc.output()}") from err
        yield proc
    finally:
        stop(process, timeout=20)
        Path(log_name).unlink(missing_ok=True)


# -- raw sockets -----------------------------------------------------------------------------------------
def raw_exchange(
    port: int,
    data: bytes,
    *,
    trickle: bytes = b"",
    trickle_every: float = 0.2,
    max_trickle: int = 200,
    timeout: float = 30.0,
) -> bytes:
    """Send ``data``; then send ``trickle`` one byte at a time until the server answers (or ``max_trickle``
    bytes); return everything the server sent before closing (or before ``timeout``)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        received = b""
        s.settimeout(trickle_every)
        for byte in trickle[:max_trickle]:
            try:
                chunk = s.recv(65536)
                if not chunk:
                    return received
                received += chunk
                break  # the server answered while we were trickling
            except TimeoutError:
                pass
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
        s.settimeout(timeout)
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def status_of(raw: bytes) -> int:
    """The status code of a raw HTTP/1.1 response (0 when there is none)."""
    if not raw.startswith(b"HTTP/1.1 "):
        return 0
    return int(raw[9:12])
