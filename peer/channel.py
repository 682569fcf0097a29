"""The encrypted datagram channel that follows a Noise handshake, WireGuard-style.

Every datagram is self-contained, because UDP loses and reorders them::

    0      1                 9
    +------+-----------------+---------------------------------+
    | type | counter (u64 LE)| ChaCha20-Poly1305 ciphertext+tag |
    +------+-----------------+---------------------------------+

The nonce is 4 zero bytes followed by the counter (the Noise/WireGuard ChaChaPoly nonce), and
the 9-byte header is the associated data, so neither the type nor the counter can be altered.
There is no receiver index: one channel per punched socket pair, so the 5-tuple identifies it.

Replay protection is the sliding-window bitmap of RFC 6479 with WireGuard's 2048-counter
window: a ring of 64-bit blocks that advances by clearing whole blocks, never by shifting
the bitmap. The window moves only after a datagram authenticates; otherwise anyone could
push it forward with a forged counter and make every genuine datagram "too old".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from noiseproto import TransportKeys
from peer.errors import RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "OVERHEAD",
    "REJECT_AFTER_MESSAGES",
    "TYPE_DATA",
    "Channel",
    "ChannelConfig",
    "ChannelError",
    "DataDatagram",
    "ReplayWindow",
]

# The first byte doubles as the packet type on the shared socket: peer.session sends
# 0xA1/0xA2 handshake, 0xA3 transport, 0xA4 probe (STUN owns 0x00-0x3F).
TYPE_DATA = 0xA3
_HEADER = struct.Struct("<BQ")
HEADER_SIZE = _HEADER.size  # 9
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE  # 25 bytes per datagram
# WireGuard's limit: stop well short of 2**64 so the counter can never wrap, and leave room
# for a window's worth of in-flight datagrams. Reaching it means: handshake again.
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_BLOCK_BITS = 64


class ChannelError(RemoteProtocolError, ValueError):
    """A datagram that is malformed, forged, replayed, or too old (or a spent counter)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    # Counters this far behind the newest accepted one are still accepted once.
    window_size: int = 2048
    message_type: int = TYPE_DATA

    def __post_init__(self) -> None:
        if self.window_size <= 0 or self.window_size % _BLOCK_BITS:
            raise ChannelError(f"window_size must be a positive multiple of {_BLOCK_BITS}")
        if not 0 <= self.message_type <= 0xFF:
            raise ChannelError("message_type must fit in one byte")


@dataclass(frozen=True, slots=True)
class DataDatagram:
    """A transport datagram, split into its fields (no cryptography happens here)."""

    message_type: int
    counter: int
    ciphertext: bytes  # includes the 16-byte tag

    @classmethod
    def parse(cls, data: bytes) -> DataDatagram:
        if len(data) < OVERHEAD:
            raise ChannelError(f"datagram of {len(data)} bytes is shorter than {OVERHEAD}")
        message_type, counter = _HEADER.unpack_from(data)
        return cls(message_type, counter, bytes(data[HEADER_SIZE:]))

    @property
    def header(self) -> bytes:
        return _HEADER.pack(self.message_type, self.counter)

    def encode(self) -> bytes:
        return self.header + self.ciphertext


class ReplayWindow:
    """RFC 6479 anti-replay bitmap: ``check`` is side-effect free, ``update`` commits.

    The ring holds ``window_size / 64 + 1`` blocks: one more than the window, so the block
    being filled at the top never aliases a block still inside the window.
    """

    __slots__ = ("_blocks", "_mask", "_ring", "_window", "highest")

    def __init__(self, window_size: int = 2048) -> None:
        self._window = window_size
        self._blocks = window_size // _BLOCK_BITS + 1
        self._ring = [0] * self._blocks
        self._mask = _BLOCK_BITS - 1
        self.highest = 0  # counter 0 is valid; its bit is simply not yet set

    def check(self, counter: int) -> bool:
        """Would ``counter`` be accepted (fresh and not too old)?"""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        if counter > self.highest:
            return True
        if self.highest - counter >= self._window:
            return False
        block = self._ring[(counter >> 6) % self._blocks]
        return not (block >> (counter & self._mask)) & 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as seen; call only after ``check`` and authentication."""
        if counter > self.highest:
            current = self.highest >> 6
            target = counter >> 6
            # Blocks skipped over are now inside the window but hold stale bits: clear them.
            for i in range(1, min(target - current, self._blocks) + 1):
                self._ring[(current + i) % self._blocks] = 0
            self.highest = counter
        self._ring[(counter >> 6) % self._blocks] |= 1 << (counter & self._mask)


class Channel:
    """Seal and open datagrams with the keys of one completed handshake.

    Not thread-safe: one owner (the event-loop callback) per channel.
    """

    __slots__ = ("_open_aead", "_seal_aead", "_send_counter", "_type", "_window")

    def __init__(self, keys: TransportKeys, *, config: ChannelConfig | None = None) -> None:
        config = config or ChannelConfig()
        # The AEAD objects are built once: per-datagram key setup would dominate the cost.
        self._seal_aead = ChaCha20Poly1305(keys.send)
        self._open_aead = ChaCha20Poly1305(keys.receive)
        self._type = config.message_type
        self._send_counter = 0
        self._window = ReplayWindow(config.window_size)

    @property
    def send_counter(self) -> int:
        """The counter the next sealed datagram will carry."""
        return self._send_counter

    def seal(self, plaintext: bytes) -> bytes:
        counter = self._send_counter
        if counter >= REJECT_AFTER_MESSAGES:
            raise ChannelError("send counter exhausted; a new handshake is needed")
        self._send_counter = counter + 1
        header = _HEADER.pack(self._type, counter)
        return header + self._seal_aead.encrypt(_NONCE_PREFIX + header[1:], plaintext, header)

    def open(self, datagram: bytes) -> bytes:
        if len(datagram) < OVERHEAD:
            raise ChannelError(f"datagram of {len(datagram)} bytes is shorter than {OVERHEAD}")
        message_type, counter = _HEADER.unpack_from(datagram)
        if message_type != self._type:
            raise ChannelError(f"not a data datagram (type {message_type})")
        # Cheap rejection before any cryptography, as WireGuard does: replays cost nothing.
        if not self._window.check(counter):
            raise ChannelError(f"counter {counter} replayed or outside the window")
        header = datagram[:HEADER_SIZE]
        try:
            plaintext = self._open_aead.decrypt(
                _NONCE_PREFIX + header[1:], datagram[HEADER_SIZE:], header
            )
        except InvalidTag:
            raise ChannelError("authentication failed") from None
        self._window.update(counter)
        return plaintext
