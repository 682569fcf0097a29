"""The transport's packets and frames, inside the channel's sealed datagrams.

A packet is a marker byte, a packet number, then frames to the end::

    +------+--------------------+-------+-------+-----
    | 0x10 | packet number (u64)| frame | frame | ...
    +------+--------------------+-------+-------+-----

Frames follow RFC 9000's (section 19) meaning with fixed-width big-endian fields instead
of variable-length integers: a fixed layout packs and parses with one ``struct`` call, which
in Python costs less than the bytes a varint would save. Stream ids are u32, offsets u64,
lengths u16 (a frame never exceeds a packet). PADDING fills the rest of a packet.

Every frame is a frozen dataclass with ``encode()``; ``parse_packet`` returns the number
and the frames, and raises ``TransportDecodeError`` for anything malformed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from peer.transport.errors import TransportDecodeError

PACKET = 0x10  # the marker byte: the session's other sealed kinds use other values
PACKET_HEADER = struct.Struct("!BQ")

PADDING, PING, ACK = 0x00, 0x01, 0x02
RESET_STREAM, STOP_SENDING = 0x04, 0x05
STREAM, STREAM_FIN = 0x08, 0x09
MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS = 0x10, 0x11, 0x12
DATA_BLOCKED, STREAM_DATA_BLOCKED = 0x14, 0x15
CONNECTION_CLOSE = 0x1C
ACK_FREQUENCY = 0x1F  # (draft-ietf-quic-ack-frequency: the sender sets the ACK delay)
DATAGRAM = 0x30

STREAM_HEADER = struct.Struct("!BIQH")  # type, stream id, offset, length
# A packet that is one stream frame, header and frame header in one (the bulk case).
SOLO_STREAM = struct.Struct("!BQBIQH")
MAX_OFFSET = 2**62
_ACK_HEAD = struct.Struct("!BQIHI")  # type, largest, delay (us), extra ranges, first range
_ACK_RANGE = struct.Struct("!II")  # gap, range length
_RESET = struct.Struct("!BIIQ")
_STOP = struct.Struct("!BII")
_U64 = struct.Struct("!BQ")
_STREAM_U64 = struct.Struct("!BIQ")
_U32 = struct.Struct("!BI")
_DATAGRAM = struct.Struct("!BH")
_CLOSE = struct.Struct("!BIH")
_ACK_FREQUENCY = struct.Struct("!BII")  # type, sequence, requested delay (us)
MAX_REASON = 400

DATAGRAM_HEADER_SIZE = _DATAGRAM.size
ACK_MAX_SIZE_PER_RANGE = _ACK_RANGE.size


@dataclass(frozen=True, slots=True)
class Padding:
    def encode(self) -> bytes:
        return b"\x00"


@dataclass(frozen=True, slots=True)
class Ping:
    def encode(self) -> bytes:
        return b"\x01"


@dataclass(frozen=True, slots=True)
class AckFrame:
    """``ranges``: inclusive (low, high) pairs, largest first, disjoint and not adjacent."""

    ranges: tuple[tuple[int, int], ...]
    delay: float  # seconds the receiver held the acknowledgement back

    def encode(self) -> bytes:
        return encode_ack(self.ranges, self.delay)


@dataclass(frozen=True, slots=True)
class StreamFrame:
    stream_id: int
    offset: int
    data: bytes | memoryview
    fin: bool = False

    def encode(self) -> bytes:
        kind = STREAM_FIN if self.fin else STREAM
        return STREAM_HEADER.pack(kind, self.stream_id, self.offset, len(self.data)) + bytes(
            self.data
        )


@dataclass(frozen=True, slots=True)
class ResetStream:
    stream_id: int
    code: int
    final_size: int

    def encode(self) -> bytes:
        return _RESET.pack(RESET_STREAM, self.stream_id, self.code, self.final_size)


@dataclass(frozen=True, slots=True)
class StopSending:
    stream_id: int
    code: int

    def encode(self) -> bytes:
        return _STOP.pack(STOP_SENDING, self.stream_id, self.code)


@dataclass(frozen=True, slots=True)
class MaxData:
    limit: int

    def encode(self) -> bytes:
        return _U64.pack(MAX_DATA, self.limit)


@dataclass(frozen=True, slots=True)
class MaxStreamData:
    stream_id: int
    limit: int

    def encode(self) -> bytes:
        return _STREAM_U64.pack(MAX_STREAM_DATA, self.stream_id, self.limit)


@dataclass(frozen=True, slots=True)
class MaxStreams:
    limit: int  # cumulative count of streams the peer may open

    def encode(self) -> bytes:
        return _U32.pack(MAX_STREAMS, self.limit)


@dataclass(frozen=True, slots=True)
class DataBlocked:
    limit: int

    def encode(self) -> bytes:
        return _U64.pack(DATA_BLOCKED, self.limit)


@dataclass(frozen=True, slots=True)
class StreamDataBlocked:
    stream_id: int
    limit: int

    def encode(self) -> bytes:
        return _STREAM_U64.pack(STREAM_DATA_BLOCKED, self.stream_id, self.limit)


@dataclass(frozen=True, slots=True)
class AckFrequency:
    """How long the receiver may hold an acknowledgement back (at most its own
    max_ack_delay): the sender asks for a fraction of its round trip, so that on a short
    path a lone packet's ACK is not held for longer than the path takes to cross.
    ``sequence`` orders requests, since a resent old one may arrive after a newer one."""

    sequence: int
    delay: float  # seconds

    def encode(self) -> bytes:
        delay = min(max(round(self.delay * 1e6), 0), 0xFFFFFFFF)
        return _ACK_FREQUENCY.pack(ACK_FREQUENCY, self.sequence, delay)


@dataclass(frozen=True, slots=True)
class DatagramFrame:
    data: bytes | memoryview

    def encode(self) -> bytes:
        return _DATAGRAM.pack(DATAGRAM, len(self.data)) + bytes(self.data)


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    code: int
    reason: str = ""

    def encode(self) -> bytes:
        # Cut at a character boundary: a split UTF-8 sequence would not parse.
        reason = self.reason[:MAX_REASON].encode()[:MAX_REASON]
        while True:
            try:
                reason.decode()
                break
            except UnicodeDecodeError:
                reason = reason[:-1]
        return _CLOSE.pack(CONNECTION_CLOSE, self.code, len(reason)) + reason


Frame = (
    Padding
    | Ping
    | AckFrame
    | StreamFrame
    | ResetStream
    | StopSending
    | MaxData
    | MaxStreamData
    | MaxStreams
    | DataBlocked
    | StreamDataBlocked
    | AckFrequency
    | DatagramFrame
    | ConnectionClose
)


def encode_packet(number: int, frames: Sequence[Frame]) -> bytes:
    return PACKET_HEADER.pack(PACKET, number) + b"".join(frame.encode() for frame in frames)


def encodable_ranges(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The leading ``ranges`` (largest first) whose lengths and gaps fit the frame's u32
    fields: a peer's packet numbers may leap by more (it chooses them), and the ranges
    beyond such a leap are simply not reported."""
    out: list[tuple[int, int]] = []
    previous_low: int | None = None
    for low, high in ranges:
        if previous_low is not None and previous_low - high - 2 > _U32_MAX:
            break
        low = max(low, high - _U32_MAX)
        out.append((low, high))
        previous_low = low
    return tuple(out)


_U32_MAX = 0xFFFFFFFF


def encode_ack(ranges: Sequence[tuple[int, int]], delay: float) -> bytes:
    """An ACK frame for inclusive (low, high) ranges, largest first (encodable_ranges)."""
    low, high = ranges[0]
    parts = [
        _ACK_HEAD.pack(ACK, high, min(int(delay * 1e6), 0xFFFFFFFF), len(ranges) - 1, high - low)
    ]
    previous_low = low
    for low, high in ranges[1:]:
        parts.append(_ACK_RANGE.pack(previous_low - high - 2, high - low))
        previous_low = low
    return b"".join(parts)


def ack_size(range_count: int) -> int:
    return _ACK_HEAD.size + (range_count - 1) * _ACK_RANGE.size


def parse_packet(data: bytes) -> tuple[int, list[Frame]]:
    """(packet number, frames) of a decrypted packet."""
    if len(data) < PACKET_HEADER.size or data[0] != PACKET:
        raise TransportDecodeError("not a transport packet")
    number = PACKET_HEADER.unpack_from(data)[1]
    view = memoryview(data)
    frames: list[Frame] = []
    at, end = PACKET_HEADER.size, len(data)
    try:
        while at < end:
            kind = data[at]
            parser = _PARSERS.get(kind)
            if parser is None:
                raise TransportDecodeError(f"unknown frame type 0x{kind:02x}")
            frame, at = parser(view, at)
            frames.append(frame)
    except struct.error:
        raise TransportDecodeError("truncated frame") from None
    if at > end:
        raise TransportDecodeError("frame runs past the end of the packet")
    return number, frames


def _stream(view: memoryview, at: int) -> tuple[Frame, int]:
    kind, stream_id, offset, length = STREAM_HEADER.unpack_from(view, at)
    start = at + STREAM_HEADER.size
    if start + length > len(view):
        raise TransportDecodeError("stream frame runs past the end of the packet")
    if offset + length > MAX_OFFSET:
        raise TransportDecodeError("stream offset beyond 2**62")
    return StreamFrame(stream_id, offset, view[start : start + length], kind == STREAM_FIN), (
        start + length
    )


def _ack(view: memoryview, at: int) -> tuple[Frame, int]:
    _, largest, delay, extra, first = _ACK_HEAD.unpack_from(view, at)
    at += _ACK_HEAD.size
    low = largest - first
    if low < 0:
        raise TransportDecodeError("ACK range below packet number 0")
    ranges = [(low, largest)]
    for _ in range(extra):
        gap, length = _ACK_RANGE.unpack_from(view, at)
        at += _ACK_RANGE.size
        high = low - gap - 2
        low = high - length
        if low < 0:
            raise TransportDecodeError("ACK range below packet number 0")
        ranges.append((low, high))
    return AckFrame(tuple(ranges), delay / 1e6), at


def _padding(view: memoryview, at: int) -> tuple[Frame, int]:
    return Padding(), len(view)  # the rest of the packet


def _ping(view: memoryview, at: int) -> tuple[Frame, int]:
    return Ping(), at + 1


def _reset(view: memoryview, at: int) -> tuple[Frame, int]:
    _, stream_id, code, final_size = _RESET.unpack_from(view, at)
    return ResetStream(stream_id, code, final_size), at + _RESET.size


def _stop(view: memoryview, at: int) -> tuple[Frame, int]:
    _, stream_id, code = _STOP.unpack_from(view, at)
    return StopSending(stream_id, code), at + _STOP.size


def _max_data(view: memoryview, at: int) -> tuple[Frame, int]:
    return MaxData(_U64.unpack_from(view, at)[1]), at + _U64.size


def _max_stream_data(view: memoryview, at: int) -> tuple[Frame, int]:
    _, stream_id, limit = _STREAM_U64.unpack_from(view, at)
    return MaxStreamData(stream_id, limit), at + _STREAM_U64.size


def _max_streams(view: memoryview, at: int) -> tuple[Frame, int]:
    return MaxStreams(_U32.unpack_from(view, at)[1]), at + _U32.size


def _data_blocked(view: memoryview, at: int) -> tuple[Frame, int]:
    return DataBlocked(_U64.unpack_from(view, at)[1]), at + _U64.size


def _stream_data_blocked(view: memoryview, at: int) -> tuple[Frame, int]:
    _, stream_id, limit = _STREAM_U64.unpack_from(view, at)
    return StreamDataBlocked(stream_id, limit), at + _STREAM_U64.size


def _ack_frequency(view: memoryview, at: int) -> tuple[Frame, int]:
    _, sequence, delay = _ACK_FREQUENCY.unpack_from(view, at)
    return AckFrequency(sequence, delay / 1e6), at + _ACK_FREQUENCY.size


def _datagram(view: memoryview, at: int) -> tuple[Frame, int]:
    length = _DATAGRAM.unpack_from(view, at)[1]
    start = at + _DATAGRAM.size
    if start + length > len(view):
        raise TransportDecodeError("datagram frame runs past the end of the packet")
    return DatagramFrame(view[start : start + length]), start + length


def _close(view: memoryview, at: int) -> tuple[Frame, int]:
    _, code, length = _CLOSE.unpack_from(view, at)
    start = at + _CLOSE.size
    if start + length > len(view):
        raise TransportDecodeError("close frame runs past the end of the packet")
    reason = bytes(view[start : start + length]).decode(errors="replace")
    return ConnectionClose(code, reason), start + length


_PARSERS = {
    PADDING: _padding,
    PING: _ping,
    ACK: _ack,
    RESET_STREAM: _reset,
    STOP_SENDING: _stop,
    STREAM: _stream,
    STREAM_FIN: _stream,
    MAX_DATA: _max_data,
    MAX_STREAM_DATA: _max_stream_data,
    MAX_STREAMS: _max_streams,
    DATA_BLOCKED: _data_blocked,
    STREAM_DATA_BLOCKED: _stream_data_blocked,
    ACK_FREQUENCY: _ack_frequency,
    DATAGRAM: _datagram,
    CONNECTION_CLOSE: _close,
}
