"""HPACK (RFC 7541) for the native gRPC transport: a decoder for the clients' header blocks, and the few
header blocks the server sends, encoded once.

The decoder is ours (the ``hpack`` package's decoder costs ~19 us per block; this one a few): the static
table and the Huffman code come from ``hpack``, decoded Huffman strings are remembered (a client sends the
same ``:path`` and ``user-agent`` on every call). Every malformed block raises :class:`HpackError`, a
COMPRESSION_ERROR for the connection. The server encodes its headers as literals without indexing and
without Huffman coding, so it keeps no encoder state: the answer's HEADERS block is a constant and its
trailers are ``grpc-status`` (and ``grpc-message``, percent-encoded as the gRPC spec asks).
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from ferryman_runtimes.grpc.compression import ACCEPT_ENCODING

STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(STATIC)
_HUFFMAN_CACHE = 4096


class HpackError(Exception):
    """A header block that cannot be decoded (the connection's COMPRESSION_ERROR)."""


class Decoder:
    """One connection's HPACK decoder: its dynamic table (``table_size``: what we advertised, 4096)."""

    def __init__(self, *, table_size: int = 4096) -> None:
        self.table: deque[tuple[bytes, bytes]] = deque()  # newest first
        self.size = 0
        self.max_size = table_size
        self.limit = table_size
        self._huffman: dict[bytes, bytes] = {}

    def _evict(self) -> None:
        table = self.table
        while self.size > self.max_size and table:
            name, value = table.pop()
            self.size -= len(name) + len(value) + 32

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        if size > self.max_size:
            self.table.clear()
            self.size = 0
            return
        self.table.appendleft((name, value))
        self.size += size
        self._evict()

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if index == 0:
            raise HpackError("header index 0")
        if index <= _STATIC_LEN:
            return STATIC[index - 1]
        try:
            return self.table[index - _STATIC_LEN - 1]
        except IndexError:
            raise HpackError(f"header index {index} beyond the table") from None

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HpackError("string longer than the header block")
        raw = data[pos:end]
        if not huffman:
            return raw, end
        cached = self._huffman.get(raw)
        if cached is None:
            try:
                cached = decode_huffman(raw)
            except HPACKDecodingError as err:
                raise HpackError(f"invalid Huffman string ({err})") from err
            if len(self._huffman) >= _HUFFMAN_CACHE:
                self._huffman.clear()
            self._huffman[raw] = cached
        return cached, end

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of one complete block (HEADERS + CONTINUATION payloads, unpadded)."""
        out: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(data)
        try:
            while pos < end:
                byte = data[pos]
                if byte & 0x80:  # indexed field
                    index, pos = _integer(data, pos, 7)
                    out.append(self._entry(index))
                    continue
                if byte & 0x40:  # literal with incremental indexing
                    index, pos = _integer(data, pos, 6)
                    indexing = True
                elif byte & 0x20:  # dynamic table size update
                    size, pos = _integer(data, pos, 5)
                    if size > self.limit:
                        raise HpackError(f"table size update to {size} over the limit of {self.limit}")
                    self.max_size = size
                    self._evict()
                    continue
                else:  # literal without indexing / never indexed
                    index, pos = _integer(data, pos, 4)
                    indexing = False
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
                if indexing:
                    self._add(name, value)
                out.append((name, value))
        except IndexError:
            raise HpackError("truncated header block") from None
        return out


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too large")


# -- encoding: literals without indexing, no Huffman ---------------------------------------------------
def _encode_int(value: int, prefix: int, first: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([first | value])
    out = bytearray([first | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """One header as a literal field without indexing, new name (the decoder's table is untouched)."""
    return b"\x00" + _encode_int(len(name), 7) + name + _encode_int(len(value), 7) + value


STATUS_200 = b"\x88"  # :status 200, static index 8
# every answer says which compressed requests it accepts (compression.py); answers are never compressed
RESPONSE_HEADERS = (
    STATUS_200
    + literal(b"content-type", b"application/grpc")
    + literal(b"grpc-accept-encoding", ACCEPT_ENCODING)
)
OK_TRAILERS = literal(b"grpc-status", b"0")

_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    """``grpc-message``: UTF-8, every byte outside printable ASCII (and ``%``) as ``%XX``."""
    raw = message.encode("utf-8", "replace")
    if all(b in _UNRESERVED for b in raw):
        return raw
    return b"".join(bytes([b]) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def trailers(code: int, message: str = "") -> bytes:
    """The trailers block of a call that ends with ``code`` (gRPC's status code number)."""
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", percent_encode(message))
    return block


def trailers_only(code: int, message: str = "") -> bytes:
    """A Trailers-Only answer (an error before any message): ``:status``, content type and the status."""
    return RESPONSE_HEADERS + trailers(code, message)
