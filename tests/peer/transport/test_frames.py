from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.transport import frames as f
from peer.transport.connection import TransportConnection
from peer.transport.errors import TransportDecodeError

ALL_FRAMES: list[f.Frame] = [
    f.Ping(),
    f.AckFrame(((90, 100), (50, 70), (0, 10)), 0.012),
    f.StreamFrame(7, 123456789, b"hello", fin=True),
    f.StreamFrame(2, 0, b"", fin=False),
    f.ResetStream(5, 9, 1000),
    f.StopSending(4, 3),
    f.MaxData(2**40),
    f.MaxStreamData(3, 77),
    f.MaxStreams(130),
    f.DataBlocked(1 << 20),
    f.StreamDataBlocked(8, 4096),
    f.AckFrequency(3, 0.0015),
    f.DatagramFrame(b"unreliable"),
    f.ConnectionClose(0, "bye"),
]


def _normal(frame: f.Frame) -> f.Frame:
    if isinstance(frame, f.StreamFrame):
        return f.StreamFrame(frame.stream_id, frame.offset, bytes(frame.data), frame.fin)
    if isinstance(frame, f.DatagramFrame):
        return f.DatagramFrame(bytes(frame.data))
    return frame


def test_every_frame_round_trips_in_one_packet() -> None:
    packet = f.encode_packet(42, [*ALL_FRAMES, f.Padding()]) + bytes(30)
    number, parsed = f.parse_packet(packet)
    assert number == 42
    assert [_normal(frame) for frame in parsed] == [*ALL_FRAMES, f.Padding()]


def test_ack_delay_keeps_microseconds() -> None:
    _, (ack,) = f.parse_packet(f.encode_packet(1, [f.AckFrame(((3, 3),), 0.000250)]))
    assert isinstance(ack, f.AckFrame) and ack.delay == pytest.approx(0.00025)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "not a transport packet"),
        (b"\x11" + bytes(8), "not a transport packet"),
        (f.PACKET_HEADER.pack(f.PACKET, 1) + b"\x7f", "unknown frame type 0x7f"),
        (f.PACKET_HEADER.pack(f.PACKET, 1) + b"\x08\x00", "truncated frame"),
        (f.encode_packet(1, [f.StreamFrame(2, 0, b"abc")])[:-1], "runs past the end"),
        (f.PACKET_HEADER.pack(f.PACKET, 1) + struct.pack("!BQIHI", 2, 5, 0, 0, 9), "below"),
    ],
)
def test_malformed_packets_raise_one_decode_error(packet: bytes, message: str) -> None:
    with pytest.raises(TransportDecodeError, match=message):
        f.parse_packet(packet)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(TransportDecodeError):
        f.parse_packet(f.PACKET_HEADER.pack(f.PACKET, 0) + data)


def test_close_reason_is_cut_at_a_character_boundary() -> None:
    encoded = f.ConnectionClose(0, "é" * 300).encode()
    _, (frame,) = f.parse_packet(f.PACKET_HEADER.pack(f.PACKET, 0) + encoded)
    assert isinstance(frame, f.ConnectionClose)
    assert frame.reason == "é" * 200


def test_ranges_beyond_a_leap_the_frame_cannot_encode_are_left_out() -> None:
    # The peer picks its packet numbers: a leap of more than 2**32 (found by bench/fuzz.py)
    # once made the ACK encoder raise struct.error inside packets_to_send.
    ranges = ((2**40, 2**40 + 5), (10, 20), (0, 3))
    assert f.encodable_ranges(ranges) == ((2**40, 2**40 + 5),)
    assert f.encodable_ranges(((0, 2**33),)) == ((2**33 - 0xFFFFFFFF, 2**33),)
    _, (ack,) = f.parse_packet(f.encode_packet(1, [f.AckFrame(f.encodable_ranges(ranges), 0)]))
    assert isinstance(ack, f.AckFrame) and ack.ranges == ((2**40, 2**40 + 5),)


def test_a_connection_acknowledges_packet_numbers_far_apart() -> None:
    conn = TransportConnection(initiator=False, now=0.0)
    for number in (0, 2**40, 2**40 + 1):
        conn.receive_packet(f.encode_packet(number, [f.Ping()]), 0.0)
    (packet,) = conn.packets_to_send(0.0)
    _, frames = f.parse_packet(packet)
    assert isinstance(frames[0], f.AckFrame) and frames[0].ranges == ((2**40, 2**40 + 1),)
