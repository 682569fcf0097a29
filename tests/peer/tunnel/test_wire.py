"""The first bytes of a tunnel stream and the UDP flow datagrams: round trips, and any
input either parses or raises TunnelDecodeError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.tunnel.specs import Protocol
from peer.tunnel.wire import (
    LENGTH,
    OpenReply,
    OpenRequest,
    OpenStatus,
    RequestKind,
    TunnelDecodeError,
    flow_datagram,
    parse_flow_datagram,
    read_length,
)

names = st.text(min_size=1, max_size=60).filter(lambda t: 0 < len(t.encode()) <= 255)


def _body(encoded: bytes) -> bytes:
    assert read_length(encoded[: LENGTH.size]) == len(encoded) - LENGTH.size
    return encoded[LENGTH.size :]


@given(
    st.sampled_from(RequestKind),
    names,
    st.integers(1, 65535),
    st.sampled_from(Protocol),
)
def test_requests_round_trip(kind: RequestKind, name: str, port: int, protocol: Protocol) -> None:
    request = OpenRequest(kind, name, port, protocol)
    assert OpenRequest.parse(_body(request.encode())) == request


@given(st.sampled_from(OpenStatus), st.text(max_size=300))
def test_replies_round_trip_and_long_reasons_are_cut_on_a_character(
    status: OpenStatus, reason: str
) -> None:
    parsed = OpenReply.parse(_body(OpenReply(status, reason).encode()))
    assert parsed.status is status and reason.startswith(parsed.reason)
    assert len(parsed.reason.encode()) <= 255


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_the_decode_error(data: bytes) -> None:
    for parse in (OpenRequest.parse, OpenReply.parse):
        with contextlib.suppress(TunnelDecodeError):  # (anything else fails the test)
            parse(data)
    try:
        parse_flow_datagram(data)
    except TunnelDecodeError:
        assert len(data) < 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (bytes([2, 1, 0, 0, 0, 1]) + b"x", "version 2"),
        (bytes([1, 9, 0, 0, 0, 1]) + b"x", "malformed"),
        (bytes([1, 1, 7, 0, 0, 1]) + b"x", "malformed"),
        (bytes([1, 2, 0, 0, 0, 1]) + b"x", "CONNECT with port 0"),
        (bytes([1, 5, 0, 0, 0, 1]) + b"x", "PUBLISH with port 0"),
        (bytes([1, 1, 0, 0, 0, 2]) + b"x", "does not match"),
        (bytes([1, 1, 0, 0, 0, 0]), "does not match"),
        (bytes([1, 1, 0, 0, 0, 1]) + b"\xff", "malformed"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(TunnelDecodeError, match=message):
        OpenRequest.parse(body)


def test_a_header_length_beyond_the_largest_is_refused_before_reading_it() -> None:
    with pytest.raises(TunnelDecodeError, match="tunnel header of 5000 bytes"):
        read_length(LENGTH.pack(5000))
    with pytest.raises(TunnelDecodeError):
        read_length(LENGTH.pack(0))


def test_flow_datagrams_carry_the_stream_id() -> None:
    assert parse_flow_datagram(flow_datagram(7, b"payload")) == (7, b"payload")
    with pytest.raises(ValueError, match="1-255"):
        OpenRequest(RequestKind.SERVICE, "x" * 256).encode()
