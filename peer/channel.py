"""The encrypted datagram channel that follows a Noise handshake, WireGuard-style, with key
updates like QUIC's (RFC 9001 section 6).

Every datagram is self-contained, because UDP loses and reorders them::

    0      1                                   9
    +------+-----------------------------------+---------------------------------+
    | type | phase (bit 63) | counter (u64 LE) | ChaCha20-Poly1305 ciphertext+tag |
    +------+-----------------------------------+---------------------------------+

The nonce is 4 zero bytes followed by the 8 header bytes after the type (the Noise/WireGuard
ChaChaPoly nonce), and the 9-byte header is the associated data, so neither the type, the
key phase nor the counter can be altered. There is no receiver index: one channel per
punched socket pair, so the 5-tuple identifies it.

Key updates: each direction's key is replaced by Noise's Rekey() of it (spec rev 34 section
11.3: the first 32 bytes of ENCRYPT(k, nonce 2**64-1, ad b"", 32 zero bytes)) after
``rekey_after_messages`` datagrams or ``rekey_after_time`` seconds, and the top bit of the
counter field says which of two consecutive keys sealed a datagram. Counters keep counting
across phases, so a (key, nonce) pair is never used twice and one replay window serves every
phase; the Rekey nonce, all ones, is above every counter a datagram may carry. Rekey() is
one-way: a key that leaks opens its own phase and later ones, never traffic before it.

A side starts a new phase only once the other side has been heard in the current one (so
the two are never more than one phase apart); a side that sees the other phase bit on a
counter above its current phase's first tries the next key, and switches (and follows with
its own sending key) only if the datagram authenticates. The previous receive key stays
for ``previous_key_grace`` seconds, for datagrams of the old phase that arrive late.

Replay protection is the sliding-window bitmap of RFC 6479 with WireGuard's 2048-counter
window: a ring of 64-bit blocks that advances by clearing whole blocks, never by shifting
the bitmap. The window moves only after a datagram authenticates; otherwise anyone could
push it forward with a forged counter and make every genuine datagram "too old".

The channel reads no clock: ``handle_timer(now)`` is its only source of time.
"""

from __future__ import annotations

import math
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
    "rekey",
]

# The first byte doubles as the packet type on the shared socket: peer.session sends
# 0xA1/0xA2 handshake, 0xA3 transport, 0xA4 probe (STUN owns 0x00-0x3F). The key phase is
# inside the counter field, so demultiplexing by first byte is the same in every phase.
TYPE_DATA = 0xA3
_HEADER = struct.Struct("<BQ")
HEADER_SIZE = _HEADER.size  # 9
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE  # 25 bytes per datagram
_PHASE_BIT = 1 << 63
# WireGuard's limit, below the phase bit: stop well short of 2**63 so the counter can never
# reach it, and leave room for a window's worth of in-flight datagrams. Reaching it means:
# handshake again.
REJECT_AFTER_MESSAGES = 2**63 - 2**13 - 1
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_REKEY_NONCE = _NONCE_PREFIX + b"\xff" * 8  # Noise's maxnonce, 2**64 - 1
_REKEY_ZEROS = bytes(32)
_BLOCK_BITS = 64


def rekey(key: bytes) -> bytes:
    """Noise's default REKEY(k) for ChaChaPoly: a one-way function of the key."""
    return ChaCha20Poly1305(key).encrypt(_REKEY_NONCE, _REKEY_ZEROS, b"")[:32]


class ChannelError(RemoteProtocolError, ValueError):
    """A datagram that is malformed, forged, replayed, or too old (or a spent counter)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    # Counters this far behind the newest accepted one are still accepted once.
    window_size: int = 2048
    message_type: int = TYPE_DATA
    # A new key phase after this many datagrams sealed in one: 2**20 full datagrams are
    # about 1.2 GB, some 20 s of the fastest this channel goes and 100 s of 100 Mbit/s, so a
    # leaked key opens no more than the time bound allows on a fast link either. (The AEAD's
    # own limits are far beyond: RFC 9001 section 6.6 puts ChaCha20-Poly1305's above 2**62.)
    rekey_after_messages: int = 2**20
    # ... or after this many seconds in one (WireGuard's REKEY_AFTER_TIME); math.inf: never.
    rekey_after_time: float = 120.0
    # The previous receive key opens late datagrams of the old phase this long after the
    # switch (internet reordering is a round trip or two), then it is forgotten.
    previous_key_grace: float = 3.0

    def __post_init__(self) -> None:
        if self.window_size <= 0 or self.window_size % _BLOCK_BITS:
            raise ChannelError(f"window_size must be a positive multiple of {_BLOCK_BITS}")
        if not 0 <= self.message_type <= 0xFF:
            raise ChannelError("message_type must fit in one byte")
        if not 0 < self.rekey_after_messages <= REJECT_AFTER_MESSAGES:
            raise ChannelError(f"rekey_after_messages must be in 1..{REJECT_AFTER_MESSAGES}")
        if not self.rekey_after_time > 0:  # also refuses NaN
            raise ChannelError(f"rekey_after_time must be positive, not {self.rekey_after_time}")
        if not 0 <= self.previous_key_grace < math.inf:
            raise ChannelError("previous_key_grace must be >= 0 and finite")


@dataclass(frozen=True, slots=True)
class DataDatagram:
    """A transport datagram, split into its fields (no cryptography happens here)."""

    message_type: int
    counter: int
    ciphertext: bytes  # includes the 16-byte tag
    key_phase: int = 0  # 0 or 1: which of two consecutive keys sealed it

    @classmethod
    def parse(cls, data: bytes) -> DataDatagram:
        if len(data) < OVERHEAD:
            raise ChannelError(f"datagram of {len(data)} bytes is shorter than {OVERHEAD}")
        message_type, word = _HEADER.unpack_from(data)
        return cls(message_type, word & ~_PHASE_BIT, bytes(data[HEADER_SIZE:]), word >> 63)

    @property
    def header(self) -> bytes:
        return _HEADER.pack(self.message_type, self.counter | self.key_phase << 63)

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
    """Seal and open datagrams with the keys of one completed handshake and their updates.

    Not thread-safe: one owner (the event-loop callback) per channel.

    The common case costs what it did before key updates: ``seal`` compares the counter
    with one limit (the volume trigger and the counter's end in one), ``open`` flips the
    phase bit off with one XOR before the replay check (a datagram of the other phase then
    fails that check and only then takes the slow path).
    """

    __slots__ = (
        "_clock",
        "_grace",
        "_next_key",
        "_next_open",
        "_open_aead",
        "_phase_start",
        "_previous_open",
        "_previous_until",
        "_receive_bit",
        "_receive_generation",
        "_receive_key",
        "_rekey_messages",
        "_rekey_time",
        "_seal_aead",
        "_seal_limit",
        "_send_counter",
        "_send_generation",
        "_send_key",
        "_type",
        "_update_pending",
        "_window",
        "update_at",
    )

    def __init__(
        self, keys: TransportKeys, *, config: ChannelConfig | None = None, now: float = 0.0
    ) -> None:
        config = config or ChannelConfig()
        self._type = config.message_type
        self._window = ReplayWindow(config.window_size)
        self._rekey_messages = config.rekey_after_messages
        self._rekey_time = config.rekey_after_time
        self._grace = config.previous_key_grace
        self._clock = now  # the latest time handle_timer was told
        # Sending. The AEAD objects are built once per key: per-datagram key setup would
        # dominate the cost. _send_counter is the whole 64-bit field, phase bit included.
        self._send_generation = 0
        self._send_key = keys.send
        self._seal_aead = ChaCha20Poly1305(keys.send)
        self._send_counter = 0
        self._seal_limit = min(self._rekey_messages, REJECT_AFTER_MESSAGES)
        self._update_pending = False  # an update is due, but the peer is not heard yet
        # When the sending key is due by time: -inf for a phase that began on a datagram
        # (no clock there: the next handle_timer stamps it), inf while an update waits for
        # the peer. The owner calls handle_timer before sealing once now >= update_at, as
        # WireGuard checks a key's age on every send: a key nobody sends with needs no timer.
        self.update_at = now + self._rekey_time
        # Receiving. Nothing is heard yet: the handshake's key counts as the *next* one, so
        # the first datagram takes the slow path once and proves the peer is in phase 0.
        self._receive_generation = -1
        self._receive_bit = _PHASE_BIT  # the phase bit of generation -1
        self._receive_key = keys.receive  # (generation -1 has none; never used as such)
        self._open_aead = ChaCha20Poly1305(keys.receive)
        self._next_key: bytes | None = keys.receive
        self._next_open: ChaCha20Poly1305 | None = self._open_aead
        self._phase_start = 0  # the first counter to arrive in this phase (older: below)
        self._previous_open: ChaCha20Poly1305 | None = None
        self._previous_until: float | None = None  # None: stamped at the next handle_timer

    @property
    def send_counter(self) -> int:
        """The counter the next sealed datagram will carry."""
        return self._send_counter & ~_PHASE_BIT

    @property
    def send_generation(self) -> int:
        """How many times the sending key was updated (its phase bit is the lowest bit)."""
        return self._send_generation

    @property
    def receive_generation(self) -> int:
        """The same for the receiving key; -1 until the first datagram authenticates."""
        return self._receive_generation

    @property
    def keeps_previous_key(self) -> bool:
        return self._previous_open is not None

    def seal(self, plaintext: bytes) -> bytes:
        counter = self._send_counter
        if counter >= self._seal_limit:
            counter = self._limit_reached(counter)
        self._send_counter = counter + 1
        header = _HEADER.pack(self._type, counter)
        return header + self._seal_aead.encrypt(_NONCE_PREFIX + header[1:], plaintext, header)

    def open(self, datagram: bytes) -> bytes:
        if len(datagram) < OVERHEAD:
            raise ChannelError(f"datagram of {len(datagram)} bytes is shorter than {OVERHEAD}")
        message_type, counter = _HEADER.unpack_from(datagram)
        if message_type != self._type:
            raise ChannelError(f"not a data datagram (type {message_type})")
        counter ^= self._receive_bit  # our phase: the bare counter; the other: 2**63 and up
        # Cheap rejection before any cryptography, as WireGuard does: replays cost nothing.
        if not self._window.check(counter):
            if counter >= _PHASE_BIT:
                return self._open_other_phase(datagram, counter ^ _PHASE_BIT)
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

    def request_key_update(self) -> None:
        """Start a new sending phase now, or as soon as the peer is heard in this one."""
        if self._send_generation == self._receive_generation:
            self._start_update()
        else:
            self._update_pending = True
            self.update_at = math.inf
            # Until then, seal's limit is only the counter's end (no slow path per datagram).
            self._seal_limit = REJECT_AFTER_MESSAGES | (self._send_counter & _PHASE_BIT)

    def get_timer(self) -> float | None:
        """When the previous receive key is forgotten (a key switched to on a datagram
        asks for a run at once: the grace is counted from it)."""
        if self._previous_open is None:
            return None
        return self._clock if self._previous_until is None else self._previous_until

    def handle_timer(self, now: float) -> None:
        """Time passes: the previous key's grace, and the sending key's age."""
        self._clock = now
        if self._previous_open is not None:
            if self._previous_until is None:
                self._previous_until = now + self._grace
            elif now >= self._previous_until:  # forgotten: late datagrams of it now fail
                self._previous_open = self._previous_until = None
        if now >= self.update_at > -math.inf:
            self.request_key_update()
        if self.update_at == -math.inf:
            self.update_at = now + self._rekey_time

    # ------------------------------------------------------------------ slow paths

    def _limit_reached(self, counter: int) -> int:
        if counter & ~_PHASE_BIT >= REJECT_AFTER_MESSAGES:
            raise ChannelError("send counter exhausted; a new handshake is needed")
        self.request_key_update()  # the volume trigger
        return self._send_counter

    def _start_update(self) -> None:
        """The next sending key (ours to start, or the peer's phase to follow)."""
        self._send_generation += 1
        self._send_key = key = rekey(self._send_key)
        self._seal_aead = ChaCha20Poly1305(key)
        word = self._send_counter ^ _PHASE_BIT  # the counter goes on; the bit flips
        self._send_counter = word
        limit = min((word & ~_PHASE_BIT) + self._rekey_messages, REJECT_AFTER_MESSAGES)
        self._seal_limit = limit | (word & _PHASE_BIT)
        self._update_pending = False
        self.update_at = -math.inf

    def _open_other_phase(self, datagram: bytes, counter: int) -> bytes:
        # The other phase bit: below the current phase's first counter, a late datagram of
        # the previous phase; above it, the next phase (the peer's sender counts on).
        if not self._window.check(counter):
            raise ChannelError(f"counter {counter} replayed or outside the window")
        following = counter >= self._phase_start
        if following:
            aead = self._next_open
            if aead is None:  # derived on demand, once (a forgery then costs one decrypt)
                self._next_key = rekey(self._receive_key)
                aead = self._next_open = ChaCha20Poly1305(self._next_key)
        elif self._previous_open is None:
            raise ChannelError(f"counter {counter} is of a key phase already forgotten")
        else:
            aead = self._previous_open
        header = datagram[:HEADER_SIZE]
        try:
            plaintext = aead.decrypt(_NONCE_PREFIX + header[1:], datagram[HEADER_SIZE:], header)
        except InvalidTag:
            raise ChannelError("authentication failed") from None
        self._window.update(counter)
        if following:
            self._next_receive_phase(counter, aead)
        return plaintext

    def _next_receive_phase(self, counter: int, aead: ChaCha20Poly1305) -> None:
        assert self._next_key is not None  # (set with _next_open)
        if self._receive_generation >= 0:
            self._previous_open, self._previous_until = self._open_aead, None
        self._open_aead, self._receive_key = aead, self._next_key
        self._next_open = self._next_key = None
        self._receive_generation += 1
        self._receive_bit ^= _PHASE_BIT
        self._phase_start = counter
        # The peer started this phase: follow it. Or we started it and hear the peer in it
        # at last: an update that had to wait may go now.
        if self._receive_generation > self._send_generation or self._update_pending:
            self._start_update()
