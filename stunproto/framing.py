"""Sans-I/O framing of STUN and TURN ChannelData messages on a byte stream (TCP).

Over UDP every datagram is one message. Over TCP (RFC 8489 section 6.2.2, RFC 8656
section 12.5) messages follow each other on the stream and each tells its own length:

* STUN: first byte 0x00-0x3F, 20-byte header, the body length in bytes 2-3 (a multiple
  of 4: attributes are padded).
* ChannelData: first byte 0x40-0x7F (the channel number, RFC 8656 allows 0x4000-0x4FFF
  but RFC 5766 clients use up to 0x7FFF), 4-byte header, the data length in bytes 2-3;
  over TCP the data is padded to a multiple of 4 bytes, and the padding is not counted.

Anything else (first byte 0x80-0xFF, per RFC 7983 that is DTLS/RTP/..., or a STUN length
that is not a multiple of 4) means the stream is garbage or out of step: nothing says where
the next message starts, so the decoder raises :class:`FramingError` and the connection is
done. ::

    decoder = StreamDecoder()
    for message in decoder.feed(chunk):   # whole messages, ChannelData without padding
        ...
    writer.write(frame(message))           # ChannelData padded for TCP
"""

from __future__ import annotations

from stunproto.errors import FramingError

__all__ = [
    "CHANNEL_HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "STUN_HEADER_SIZE",
    "FramingError",
    "StreamDecoder",
    "frame",
    "is_channel_data_byte",
]

STUN_HEADER_SIZE = 20
CHANNEL_HEADER_SIZE = 4
# The largest message either kind can announce: a 16-bit length plus the header. Whatever
# the peer sends, the decoder never holds more than one such message (plus padding) in
# its buffer between calls.
MAX_MESSAGE_SIZE = 0xFFFF + STUN_HEADER_SIZE
_FIRST_CHANNEL_BYTE, _LAST_CHANNEL_BYTE = 0x40, 0x7F


def is_channel_data_byte(first: int) -> bool:
    return _FIRST_CHANNEL_BYTE <= first <= _LAST_CHANNEL_BYTE


def _sizes(header: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(message size, size on the stream) of the message whose header starts at ``pos``;
    the caller has checked that 4 bytes are there. Raises FramingError for garbage."""
    first = header[pos]
    length = (header[pos + 2] << 8) | header[pos + 3]
    if first < _FIRST_CHANNEL_BYTE:
        if length & 3:
            raise FramingError(f"STUN length {length} is not a multiple of 4")
        size = STUN_HEADER_SIZE + length
        return size, size
    if first <= _LAST_CHANNEL_BYTE:
        size = CHANNEL_HEADER_SIZE + length
        return size, size + (-length & 3)
    raise FramingError(_not_a_message(first))


def _not_a_message(first: int) -> str:
    return f"first byte 0x{first:02x} is neither STUN nor ChannelData"


class StreamDecoder:
    """Cuts a byte stream into STUN and ChannelData messages.

    After a :class:`FramingError` the decoder stays broken (every later ``feed`` raises):
    there is no way to find the next message boundary again."""

    __slots__ = ("_broken", "_buffer")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (never more than one padded message)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Whole messages completed by ``data``, in stream order (ChannelData without its
        padding); raises :class:`FramingError` on garbage."""
        if self._broken is not None:
            raise FramingError(self._broken)
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        pos = 0
        end = len(buffer)
        try:
            while pos < end:
                if buffer[pos] > _LAST_CHANNEL_BYTE:
                    # Checked before the length is in: garbage fails on its first byte.
                    raise FramingError(_not_a_message(buffer[pos]))
                if end - pos < CHANNEL_HEADER_SIZE:
                    break
                size, stream_size = _sizes(buffer, pos)
                if end - pos < stream_size:
                    break
                messages.append(bytes(buffer[pos : pos + size]))
                pos += stream_size
        except FramingError as exc:
            self._broken = str(exc)
            buffer.clear()
            raise FramingError(str(exc), messages) from None
        # One compaction per feed, not per message: feeding many small messages in one
        # chunk stays linear.
        del buffer[:pos]
        return messages


def frame(message: bytes) -> bytes:
    """``message`` as it goes on a stream: ChannelData padded to a multiple of 4 bytes
    (RFC 8656 section 12.5), STUN unchanged (it is 4-aligned already).

    Raises ValueError if ``message`` is not one whole message (e.g. already padded)."""
    if len(message) < CHANNEL_HEADER_SIZE:
        raise ValueError("shorter than any message header")
    try:
        size, stream_size = _sizes(message, 0)
    except FramingError as exc:
        raise ValueError(str(exc)) from None
    if size != len(message):
        raise ValueError(f"header says {size} bytes, message has {len(message)}")
    return message + b"\x00" * (stream_size - size)
