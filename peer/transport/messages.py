"""Messages on a byte stream: each a 4-byte big-endian length and its bytes."""

from __future__ import annotations

import struct

from peer.transport.errors import ErrorCode, PeerViolation

LENGTH = struct.Struct("!I")


class MessageReader:
    """Cuts a stream's bytes into messages; holds at most one incomplete message."""

    __slots__ = ("_buffer", "_max_size")

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages = []
        at = 0
        while len(buffer) - at >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buffer, at)
            if length > self._max_size:
                raise PeerViolation(
                    ErrorCode.PROTOCOL_VIOLATION,
                    f"message of {length} bytes announced, at most {self._max_size}",
                )
            start = at + LENGTH.size
            if len(buffer) - start < length:
                break
            messages.append(bytes(buffer[start : start + length]))
            at = start + length
        if at:
            del buffer[:at]
        return messages
