"""gRPC message compression on the native transport (gRPC's compression spec, doc/compression.md).

A client may compress its request message (the prefix's flag byte is 1) with the algorithm it names in
``grpc-encoding``. The transport inflates ``gzip`` and ``deflate`` (zlib's format, as gRPC C-core, Java and
Go write it), never past the message size limit (a small compressed message can inflate to gigabytes), and
answers every call uncompressed (``identity``), which the protocol allows whatever the client sent. Every
answer advertises what it accepts in ``grpc-accept-encoding``.

Failures, as the spec says: an algorithm the server does not support is UNIMPLEMENTED; a message flagged
compressed with no algorithm named, or one that does not inflate, is INTERNAL; one that inflates past the
limit is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import zlib

import grpc

ACCEPT_ENCODING = b"identity,deflate,gzip"
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class CompressionError(Exception):
    """A request message that cannot be inflated; ``code`` is its gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def inflate(encoding: bytes | None, data: bytes, *, limit: int) -> bytes:
    """The message ``data`` compressed with ``encoding`` (``grpc-encoding``; None: not given or identity),
    inflated to at most ``limit`` bytes."""
    if encoding is None:
        raise CompressionError(
            grpc.StatusCode.INTERNAL, "the message is flagged compressed but grpc-encoding names no algorithm"
        )
    wbits = _WBITS.get(encoding.lower())
    if wbits is None:
        name = encoding.decode("latin-1", "replace")[:64]
        raise CompressionError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"grpc-encoding {name!r} is not supported (accepted: {ACCEPT_ENCODING.decode()})",
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise CompressionError(
            grpc.StatusCode.INTERNAL, f"the {encoding.decode()} message does not inflate: {err}"
        ) from err
    if len(out) > limit:
        raise CompressionError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"the message inflates past the limit of {limit} bytes"
        )
    if not inflater.eof or inflater.unused_data:
        raise CompressionError(
            grpc.StatusCode.INTERNAL, f"the {encoding.decode()} message is truncated or has trailing bytes"
        )
    return out
