"""The native gRPC transport's HPACK decoder and header encoding, against the ``hpack`` package's encoder
(Huffman strings, the dynamic table with eviction and size updates) and decoder, and its pure helpers."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman_runtimes.grpc.headers import Decoder, HpackError, percent_encode, trailers, trailers_only
from ferryman_runtimes.grpc.stream import parse_timeout

_NAMES = st.sampled_from(
    [":path", ":authority", "content-type", "user-agent", "grpc-timeout", "x-user-id", "x"]
)
_HEADERS = st.lists(st.tuples(_NAMES, st.text(max_size=60)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(_HEADERS, min_size=1, max_size=8),
    huffman=st.booleans(),
    table=st.sampled_from([0, 64, 4096]),
)
def test_decodes_what_hpack_encodes(blocks: list[list[tuple[str, str]]], huffman: bool, table: int) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table  # a size update in the first block, evictions after
    ours = Decoder()
    for headers in blocks:
        block = encoder.encode(headers, huffman=huffman)
        got = ours.decode(block)
        assert got == [(n.encode(), v.encode()) for n, v in headers]


def test_malformed_blocks_are_hpack_errors() -> None:
    for block in (b"\x80", b"\xff\xff\xff\xff\xff\xff\xff", b"\x40\x05ab", b"\xbf\x7f", b"\x3f\xe2\x1f"):
        with pytest.raises(HpackError):
            Decoder().decode(block)


def test_the_servers_blocks_decode_with_hpack() -> None:
    decoder = hpack.Decoder()
    assert decoder.decode(trailers(0)) == [("grpc-status", "0")]
    got: dict[Any, Any] = dict(decoder.decode(trailers_only(5, "model 'modèle' 100% gone")))  # str, not raw
    assert got[":status"] == "200" and got["content-type"] == "application/grpc" and got["grpc-status"] == "5"
    assert unquote(got["grpc-message"]) == "model 'modèle' 100% gone"


def test_percent_encoding_keeps_printable_ascii() -> None:
    assert percent_encode("plain message: ok") == b"plain message: ok"
    assert percent_encode("50% é\n") == b"50%25 %C3%A9%0A"


def test_grpc_timeout_values() -> None:
    assert parse_timeout(b"100m", 10.0) == pytest.approx(10.1)
    assert parse_timeout(b"2S", 0.0) == 2.0 and parse_timeout(b"1H", 0.0) == 3600.0
    assert parse_timeout(b"5u", 0.0) == pytest.approx(5e-6) and parse_timeout(b"7n", 0.0) == pytest.approx(
        7e-9
    )
    for bad in (b"", b"m", b"123456789S", b"10x", b"-1S", b"1.5S"):
        assert parse_timeout(bad, 0.0) is None
