"""ferryman_runtimes.grpc.compression.inflate: gzip and deflate as gRPC clients write them, bounded."""

from __future__ import annotations

import gzip
import zlib

import pytest
from grpc import StatusCode
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman_runtimes.grpc.compression import CompressionError, inflate


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000))
def test_gzip_and_deflate_round_trip(data: bytes) -> None:
    assert inflate(b"gzip", gzip.compress(data), limit=5000) == data
    assert inflate(b"deflate", zlib.compress(data), limit=5000) == data
    assert inflate(b"GZIP", gzip.compress(data), limit=5000) == data  # names are case-insensitive


def test_an_unknown_algorithm_is_unimplemented_and_names_what_is_accepted() -> None:
    with pytest.raises(CompressionError) as caught:
        inflate(b"snappy", b"\x00", limit=10)
    assert caught.value.code == StatusCode.UNIMPLEMENTED
    assert "snappy" in str(caught.value) and "identity,deflate,gzip" in str(caught.value)


def test_a_flagged_message_without_an_algorithm_is_internal() -> None:
    with pytest.raises(CompressionError) as caught:
        inflate(None, gzip.compress(b"x"), limit=10)
    assert caught.value.code == StatusCode.INTERNAL


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(b"a" * 1000)[:-9], gzip.compress(b"abc") + b"tail"],
    ids=["garbage", "truncated", "trailing-bytes"],
)
def test_a_message_that_does_not_inflate_cleanly_is_internal(data: bytes) -> None:
    with pytest.raises(CompressionError) as caught:
        inflate(b"gzip", data, limit=1 << 20)
    assert caught.value.code == StatusCode.INTERNAL


def test_a_bomb_stops_at_the_limit() -> None:
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB of zeros in ~64 kB
    assert len(bomb) < 100_000
    with pytest.raises(CompressionError) as caught:
        inflate(b"deflate", bomb, limit=1 << 20)
    assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED and "1048576" in str(caught.value)
    assert inflate(b"deflate", zlib.compress(b"\x00" * 1000), limit=1000) == b"\x00" * 1000  # exactly at it
