"""TURN ChannelData (RFC 8656 section 12): a 4-byte header (channel number, length) and the
data, the compact framing between a TURN client and server once a channel is bound.

RFC 7983 demultiplexing puts ChannelData at first bytes 0x40-0x4F (STUN is 0x00-0x3F);
RFC 5766 clients (turnutils_uclient) use channel numbers up to 0x7FFF, which a server may
accept too (``rfc5766``).
"""

from __future__ import annotations

import struct

HEADER_SIZE = 4
CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x4FFF  # RFC 8656 section 12
RFC5766_CHANNEL_MAX = 0x7FFF
HEADER = struct.Struct("!HH")


def is_channel_data(data: bytes, *, rfc5766: bool = False) -> bool:
    """Does ``data`` look like ChannelData (by its first byte; at least a header long)?"""
    return len(data) >= HEADER_SIZE and 0x40 <= data[0] <= (0x7F if rfc5766 else 0x4F)


def encode_channel_data(channel: int, data: bytes) -> bytes:
    # No padding: over UDP it is optional (RFC 8656 section 12.5) and only costs bytes;
    # stunproto.framing pads it for TCP.
    return HEADER.pack(channel, len(data)) + data


def decode_channel_data(data: bytes, *, rfc5766: bool = False) -> tuple[int, bytes] | None:
    """(channel, payload), or None if the framing is malformed (a short datagram, a channel
    number out of range, a length past the end)."""
    if not is_channel_data(data, rfc5766=rfc5766):
        return None
    channel, length = HEADER.unpack_from(data)
    if channel > (RFC5766_CHANNEL_MAX if rfc5766 else CHANNEL_MAX):
        return None
    if HEADER_SIZE + length > len(data):
        return None
    return channel, bytes(data[HEADER_SIZE : HEADER_SIZE + length])
