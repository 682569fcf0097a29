"""Frames inside the encrypted channel between two peers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from peer.errors import RemoteProtocolError


class FrameError(RemoteProtocolError, ValueError):
    """A decrypted datagram that is not a well-formed frame (a bug or a hostile peer)."""


_DATA, _ACK, _KEEPALIVE, _CLOSE = 1, 2, 3, 4
_SEQ = struct.Struct("!BQ")


@dataclass(frozen=True, slots=True)
class Data:
    seq: int
    payload: bytes

    def encode(self) -> bytes:
        return _SEQ.pack(_DATA, self.seq) + self.payload


@dataclass(frozen=True, slots=True)
class Ack:
    next_expected: int

    def encode(self) -> bytes:
        return _SEQ.pack(_ACK, self.next_expected)


@dataclass(frozen=True, slots=True)
class Keepalive:
    def encode(self) -> bytes:
        return bytes([_KEEPALIVE])


@dataclass(frozen=True, slots=True)
class Close:
    reason: str = ""

    def encode(self) -> bytes:
        # Cut at a character boundary: a split UTF-8 sequence would not parse.
        return bytes([_CLOSE]) + self.reason[:200].encode()[:800]


Frame = Data | Ack | Keepalive | Close


def parse_frame(data: bytes) -> Frame:
    if not data:
        raise FrameError("empty frame")
    kind = data[0]
    if kind in (_DATA, _ACK):
        if len(data) < _SEQ.size:
            raise FrameError("truncated frame")
        number = _SEQ.unpack_from(data)[1]
        return Data(number, data[_SEQ.size :]) if kind == _DATA else Ack(number)
    if kind == _KEEPALIVE:
        return Keepalive()
    if kind == _CLOSE:
        return Close(data[1:].decode(errors="replace"))
    raise FrameError(f"unknown frame type {kind}")
