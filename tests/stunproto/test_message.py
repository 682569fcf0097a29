"""STUN decoding bounds: what a message may hold before it is refused undecoded."""

from __future__ import annotations

import pytest

from stunproto import StunDecodeError, StunMessage


def test_a_datagram_packed_with_attributes_is_refused_undecoded() -> None:
    # 64 KB of empty attributes (16,000 of them) once cost 12-21 ms of CPU to decode.
    body = b"\x80\x22\x00\x00" * 16_000  # SOFTWARE, empty, again and again
    header = b"\x00\x01" + len(body).to_bytes(2, "big") + bytes.fromhex("2112a442") + bytes(12)
    with pytest.raises(StunDecodeError, match="more than 128 attributes"):
        StunMessage.parse(header + body)
    # A message with as many as the limit still parses.
    body = b"\x80\x22\x00\x00" * 128
    header = b"\x00\x01" + len(body).to_bytes(2, "big") + bytes.fromhex("2112a442") + bytes(12)
    assert len(StunMessage.parse(header + body).attributes) == 128
