"""Transport channel: framing, tampering, the RFC 6479 replay window, fuzzing, speed."""

from __future__ import annotations

import contextlib
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noiseproto import TransportKeys
from peer.channel import (
    HEADER_SIZE,
    OVERHEAD,
    REJECT_AFTER_MESSAGES,
    TYPE_DATA,
    Channel,
    ChannelConfig,
    ChannelError,
    DataDatagram,
    ReplayWindow,
)

WINDOW = 2048


def _pair() -> tuple[Channel, Channel]:
    k1, k2 = os.urandom(32), os.urandom(32)
    a = Channel(TransportKeys(send=k1, receive=k2, handshake_hash=bytes(32)))
    b = Channel(TransportKeys(send=k2, receive=k1, handshake_hash=bytes(32)))
    return a, b


def test_round_trip_both_directions() -> None:
    a, b = _pair()
    for i in range(5):
        assert b.open(a.seal(b"ping %d" % i)) == b"ping %d" % i
        assert a.open(b.seal(b"pong %d" % i)) == b"pong %d" % i
    assert b.open(a.seal(b"")) == b""


def test_wire_format() -> None:
    a, _ = _pair()
    a.seal(b"first")
    datagram = a.seal(b"hello")
    assert len(datagram) == OVERHEAD + 5
    parsed = DataDatagram.parse(datagram)
    assert parsed.message_type == TYPE_DATA == datagram[0]
    assert parsed.counter == 1
    assert datagram[1:HEADER_SIZE] == (1).to_bytes(8, "little")
    assert parsed.encode() == datagram
    with pytest.raises(ChannelError):
        DataDatagram.parse(datagram[: OVERHEAD - 1])


def test_every_flipped_byte_fails() -> None:
    a, b = _pair()
    datagram = a.seal(b"authentic payload")
    for i in range(len(datagram)):
        tampered = bytearray(datagram)
        tampered[i] ^= 0x01
        with pytest.raises(ChannelError):
            b.open(bytes(tampered))
    # None of the forgeries moved the window: the genuine datagram still opens.
    assert b.open(datagram) == b"authentic payload"


def test_truncated_and_wrong_type_fail() -> None:
    a, b = _pair()
    datagram = a.seal(b"x")
    with pytest.raises(ChannelError):
        b.open(datagram[:-1])
    with pytest.raises(ChannelError):
        b.open(datagram[: OVERHEAD - 1])
    with pytest.raises(ChannelError):
        b.open(b"\x00" + datagram[1:])


def test_reflection_fails() -> None:
    # A datagram we sent, bounced back at us, is under our send key, not our receive key.
    a, _ = _pair()
    with pytest.raises(ChannelError):
        a.open(a.seal(b"echo"))


def test_exact_duplicate_fails() -> None:
    a, b = _pair()
    datagram = a.seal(b"once")
    assert b.open(datagram) == b"once"
    with pytest.raises(ChannelError, match="replayed"):
        b.open(datagram)


def test_out_of_order_within_window() -> None:
    a, b = _pair()
    datagrams = [a.seal(b"%d" % i) for i in range(300)]
    order = list(range(300))
    order.reverse()
    order[0], order[150] = order[150], order[0]
    for i in order:
        assert b.open(datagrams[i]) == b"%d" % i
    for i in order:
        with pytest.raises(ChannelError):
            b.open(datagrams[i])


def test_too_old_fails_and_window_edge() -> None:
    a, b = _pair()
    datagrams = [a.seal(b"%d" % i) for i in range(WINDOW + 2)]
    b.open(datagrams[WINDOW])  # newest = 2048
    with pytest.raises(ChannelError):
        b.open(datagrams[0])  # 2048 behind: just outside
    assert b.open(datagrams[1]) == b"1"  # 2047 behind: oldest still inside
    b.open(datagrams[WINDOW + 1])  # newest = 2049: counter 1 now too old (and seen)
    with pytest.raises(ChannelError):
        b.open(datagrams[1])
    assert b.open(datagrams[2]) == b"2"


def test_forged_high_counter_does_not_advance_window() -> None:
    a, b = _pair()
    genuine = a.seal(b"genuine")
    forged = bytearray(a.seal(b"x"))
    forged[1:HEADER_SIZE] = (10**6).to_bytes(8, "little")
    with pytest.raises(ChannelError):
        b.open(bytes(forged))
    assert b.open(genuine) == b"genuine"


def test_window_matches_a_reference_model() -> None:
    # Random arrival order over a range wider than the window, against a set-based model.
    import random

    rng = random.Random(6479)
    window = ReplayWindow(WINDOW)
    seen: set[int] = set()
    highest = 0
    for _ in range(20000):
        counter = max(0, highest + rng.randint(-2600, 200))
        expected = counter not in seen and (counter > highest or highest - counter < WINDOW)
        assert window.check(counter) == expected, counter
        if expected:
            window.update(counter)
            seen.add(counter)
            highest = max(highest, counter)


def test_big_jumps_clear_the_ring() -> None:
    window = ReplayWindow(WINDOW)
    window.update(5)
    window.update(5 + 64 * 40)  # jump further than the whole ring
    assert window.check(5 + 64 * 40 - 100)
    assert not window.check(5 + 64 * 40)
    window.update(10**12)
    assert window.check(10**12 - 1)
    assert not window.check(10**12 - WINDOW)


def test_counter_never_wraps() -> None:
    a, _ = _pair()
    a._send_counter = REJECT_AFTER_MESSAGES
    with pytest.raises(ChannelError, match="exhausted"):
        a.seal(b"x")
    assert not ReplayWindow().check(REJECT_AFTER_MESSAGES)
    assert not ReplayWindow().check(2**64 - 1)


def test_config_validation() -> None:
    with pytest.raises(ChannelError):
        ChannelConfig(window_size=100)
    with pytest.raises(ChannelError):
        ChannelConfig(message_type=256)
    small = ChannelConfig(window_size=64, message_type=0x42)
    k = os.urandom(32)
    a = Channel(TransportKeys(send=k, receive=k, handshake_hash=b""), config=small)
    datagram = a.seal(b"x")
    assert datagram[0] == 0x42
    assert a.open(datagram) == b"x"


_FUZZ_KEY = os.urandom(32)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_fuzz_open_raises_only_channel_error(data: bytes) -> None:
    channel = Channel(TransportKeys(send=_FUZZ_KEY, receive=_FUZZ_KEY, handshake_hash=b""))
    with contextlib.suppress(ChannelError):
        channel.open(data)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.data())
def test_fuzz_mutated_datagrams_fail(payload: bytes, data: st.DataObject) -> None:
    a, b = _pair()
    datagram = bytearray(a.seal(payload))
    index = data.draw(st.integers(0, len(datagram) - 1))
    datagram[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ChannelError):
        b.open(bytes(datagram))


def test_per_datagram_cost_is_small() -> None:
    a, b = _pair()
    payload = os.urandom(1200)
    n = 5000
    start = time.perf_counter()
    datagrams = [a.seal(payload) for _ in range(n)]
    middle = time.perf_counter()
    for datagram in datagrams:
        b.open(datagram)
    end = time.perf_counter()
    seal_us = (middle - start) / n * 1e6
    open_us = (end - middle) / n * 1e6
    print(f"seal {seal_us:.2f} us, open {open_us:.2f} us per 1200-byte datagram")
    # Generous bound: a loaded 2-core CI box, not a benchmark.
    assert seal_us < 200 and open_us < 200
