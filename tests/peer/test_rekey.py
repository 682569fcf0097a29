"""Key updates of the channel (peer.channel; RFC 9001 section 6 with Noise's Rekey): by
volume and by time, the phase bit, following the peer, one phase at a time, reordering
across a boundary, forgeries, and the previous key's grace. No clock: time is an argument."""

from __future__ import annotations

import math
import os
import random

import pytest

from noiseproto import TransportKeys
from peer.channel import (
    HEADER_SIZE,
    Channel,
    ChannelConfig,
    ChannelError,
    DataDatagram,
    rekey,
)
from peer.events import MessageReceived
from peer.session import PeerSession, SessionConfig, SessionState
from tests.support.sessions import ALICE_PUBLIC, BOB_PUBLIC, session_pair


def _pair(**options: float) -> tuple[Channel, Channel, bytes, bytes]:
    config = ChannelConfig(**options)  # type: ignore[arg-type]
    k1, k2 = os.urandom(32), os.urandom(32)
    a = Channel(TransportKeys(send=k1, receive=k2, handshake_hash=bytes(32)), config=config)
    b = Channel(TransportKeys(send=k2, receive=k1, handshake_hash=bytes(32)), config=config)
    return a, b, k1, k2


def _greet(a: Channel, b: Channel) -> None:
    """One datagram each way: each side has heard the other in phase 0."""
    assert b.open(a.seal(b"hello")) == b"hello"
    assert a.open(b.seal(b"hi")) == b"hi"


def _phase(datagram: bytes) -> int:
    return DataDatagram.parse(datagram).key_phase


def test_rekey_is_noises_default() -> None:
    # REKEY(k) = first 32 bytes of ENCRYPT(k, 2**64 - 1, b"", 32 zero bytes) (spec 11.3).
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = bytes(range(32))
    nonce = bytes(4) + (2**64 - 1).to_bytes(8, "little")
    assert rekey(key) == ChaCha20Poly1305(key).encrypt(nonce, bytes(32), b"")[:32]
    assert rekey(key) != key and len(rekey(key)) == 32


def test_a_new_phase_after_the_volume() -> None:
    a, b, k1, _ = _pair(rekey_after_messages=10)
    _greet(a, b)
    phase0 = [a.seal(b"%d" % i) for i in range(9)]  # counters 1..9: ten in phase 0
    assert a.send_generation == 0 and {_phase(d) for d in phase0} == {0}
    first = a.seal(b"ten")
    assert a.send_generation == 1 and _phase(first) == 1
    parsed = DataDatagram.parse(first)
    assert parsed.counter == 10  # counters go on across phases
    assert first[1:HEADER_SIZE] == (10 | 1 << 63).to_bytes(8, "little")
    # Sealed under Rekey(k1), not k1: a channel still on the handshake key cannot open it.
    stale = Channel(TransportKeys(send=k1, receive=k1, handshake_hash=b""))
    with pytest.raises(ChannelError):
        stale.open(first)
    for datagram in phase0:
        b.open(datagram)
    assert b.open(first) == b"ten"
    # b switched, and follows with its own sending key at once.
    assert b.receive_generation == b.send_generation == 1
    answer = b.seal(b"ack")
    assert _phase(answer) == 1 and a.open(answer) == b"ack"
    assert a.receive_generation == 1


def test_a_new_phase_after_the_time() -> None:
    a, b, _, _ = _pair(rekey_after_time=120.0)
    _greet(a, b)
    assert a.update_at == 120.0 and a.get_timer() is None  # no timer of its own
    a.handle_timer(119.9)
    assert a.send_generation == 0
    a.handle_timer(120.0)
    assert a.send_generation == 1 and a.update_at == 240.0
    assert b.open(a.seal(b"late")) == b"late" and b.send_generation == 1
    # b's phase began on a datagram: its next handle_timer stamps it.
    assert b.update_at == -math.inf
    b.handle_timer(130.0)
    assert b.update_at == 250.0


def test_no_second_update_before_the_peer_is_heard_in_the_first() -> None:
    a, b, _, _ = _pair(rekey_after_messages=10, rekey_after_time=1.0)
    _greet(a, b)
    sent = [a.seal(b"%d" % i) for i in range(100)]  # ten phases' worth
    for now in (5.0, 50.0, 500.0):
        a.handle_timer(now)
    assert a.send_generation == 1  # one update, then waiting for b
    assert {_phase(d) for d in sent[9:]} == {1}
    assert a.update_at == math.inf  # (no time trigger while waiting)
    for datagram in sent:
        b.open(datagram)
    assert b.send_generation == 1
    # b is heard in phase 1: a's waiting update goes at once.
    a.open(b.seal(b"ack"))
    assert a.receive_generation == 1 and a.send_generation == 2


def test_the_first_update_waits_for_the_first_datagram() -> None:
    a, b, _, _ = _pair(rekey_after_time=10.0)
    a.handle_timer(20.0)
    assert a.send_generation == 0 and a.receive_generation == -1  # nothing heard yet
    datagram = a.seal(b"x")
    assert _phase(datagram) == 0 and b.open(datagram) == b"x"
    a.open(b.seal(b"y"))
    assert a.send_generation == 1


def test_many_phases_both_ways_with_reordering() -> None:
    # 10 ms one way plus up to 20 ms of jitter: datagrams overtake one another by a dozen or
    # so, across phase boundaries (phases hold 64 datagrams, or half a second's).
    rng = random.Random(9001)
    a, b, _, _ = _pair(rekey_after_messages=64, rekey_after_time=0.5)
    wires: tuple[list[tuple[float, bytes]], ...] = ([], [])
    sent: tuple[list[bytes], ...] = ([], [])
    delivered: tuple[list[bytes], ...] = ([], [])
    now = 0.0
    for _ in range(500):
        now += 0.005
        for index, (sender, receiver) in enumerate(((a, b), (b, a))):
            if sender.update_at <= now:
                sender.handle_timer(now)  # as the session does before sealing
            for _ in range(rng.randint(0, 10)):
                payload = b"%d:%d" % (index, len(sent[index]))
                sent[index].append(payload)
                wires[index].append((now + 0.01 + rng.uniform(0, 0.02), sender.seal(payload)))
            wires[index].sort()
            while wires[index] and wires[index][0][0] <= now:
                delivered[index].append(receiver.open(wires[index].pop(0)[1]))
            receiver.handle_timer(now)
            assert abs(a.send_generation - b.send_generation) <= 1
            assert sender.send_generation - sender.receive_generation in (0, 1)
    for index, receiver in enumerate((b, a)):
        delivered[index].extend(receiver.open(datagram) for _, datagram in wires[index])
        assert sorted(delivered[index]) == sorted(sent[index])  # every one, exactly once
        assert len(sent[index]) > 2000
    assert a.send_generation >= 20 and b.send_generation >= 20


def test_late_datagrams_of_the_old_phase_open_across_the_boundary() -> None:
    a, b, _, _ = _pair(rekey_after_messages=20)
    _greet(a, b)
    datagrams = [a.seal(b"%d" % i) for i in range(40)]  # 1..19 phase 0, then phase 1
    assert {_phase(d) for d in datagrams[:19]} == {0} and _phase(datagrams[19]) == 1
    order = datagrams[25:30] + datagrams[:19][::-1] + datagrams[19:25] + datagrams[30:]
    assert sorted(b.open(d) for d in order) == sorted(b"%d" % i for i in range(40))
    assert b.keeps_previous_key
    for datagram in order:  # the window spans the phases: every replay fails
        with pytest.raises(ChannelError):
            b.open(datagram)


def test_a_forgery_with_the_other_phase_bit_changes_nothing() -> None:
    a, b, _, _ = _pair(rekey_after_messages=1000)
    _greet(a, b)
    genuine = a.seal(b"genuine")
    state = (b.send_generation, b.receive_generation, b.update_at, b.get_timer())
    flipped = bytearray(genuine)
    flipped[HEADER_SIZE - 1] ^= 0x80  # the phase bit: top bit of the counter's last byte
    forgeries = [bytes(flipped), bytes(flipped[:HEADER_SIZE]) + os.urandom(40)]
    high = bytearray(flipped)
    high[1 : HEADER_SIZE - 1] = b"\xff" * 7  # a far-ahead counter with the bit
    forgeries.append(bytes(high))
    for forgery in forgeries:
        with pytest.raises(ChannelError, match="authentication"):
            b.open(forgery)
        assert (b.send_generation, b.receive_generation, b.update_at, b.get_timer()) == state
    assert b.open(genuine) == b"genuine"  # (nor did the window move)
    assert _phase(b.seal(b"still phase 0")) == 0


def test_a_forged_old_phase_datagram_changes_nothing_either() -> None:
    a, b, _, _ = _pair(rekey_after_messages=5)
    _greet(a, b)
    old = [a.seal(b"old %d" % i) for i in range(4)]  # counters 1..4: phase 0
    new = a.seal(b"new")
    assert b.open(new) == b"new" and b.receive_generation == 1
    forged = bytearray(old[0])
    forged[-1] ^= 1
    with pytest.raises(ChannelError):
        b.open(bytes(forged))
    assert b.receive_generation == 1 and b.open(old[0]) == b"old 0"


def test_the_previous_key_is_forgotten_after_the_grace() -> None:
    a, b, _, _ = _pair(rekey_after_messages=5, previous_key_grace=3.0)
    _greet(a, b)
    held = [a.seal(b"held %d" % i) for i in range(4)]  # phase 0, kept back by the network
    assert b.open(a.seal(b"phase 1")) == b"phase 1"
    assert b.keeps_previous_key and b.get_timer() == 0.0  # asks for a run to count from
    b.handle_timer(10.0)
    assert b.get_timer() == 13.0
    assert b.open(held[0]) == b"held 0"  # within the grace: still opens
    b.handle_timer(12.9)
    assert b.open(held[1]) == b"held 1"
    b.handle_timer(13.0)
    assert not b.keeps_previous_key and b.get_timer() is None
    for datagram in held[2:]:  # late old-phase datagrams now fail
        with pytest.raises(ChannelError, match="forgotten"):
            b.open(datagram)
    for datagram in held[:2]:  # (and replays, as ever)
        with pytest.raises(ChannelError, match="replayed"):
            b.open(datagram)
    assert b.open(a.seal(b"current")) == b"current"


def test_exhaustion_is_still_refused_in_an_odd_phase() -> None:
    a, b, _, _ = _pair(rekey_after_messages=2)
    _greet(a, b)
    a.seal(b"1")
    a.seal(b"2")
    assert a.send_generation == 1
    a._send_counter = (2**63 - 2**13 - 1) | 1 << 63  # the last counter, phase bit set
    with pytest.raises(ChannelError, match="exhausted"):
        a.seal(b"x")


def test_config_validation() -> None:
    for bad in (
        {"rekey_after_messages": 0},
        {"rekey_after_messages": 2**63},
        {"rekey_after_time": 0.0},
        {"rekey_after_time": math.nan},
        {"previous_key_grace": -1.0},
        {"previous_key_grace": math.inf},
    ):
        with pytest.raises(ChannelError):
            ChannelConfig(**bad)
    never = ChannelConfig(rekey_after_time=math.inf)
    k = os.urandom(32)
    channel = Channel(TransportKeys(send=k, receive=k, handshake_hash=b""), config=never)
    channel.open(channel.seal(b"x"))
    channel.handle_timer(1e9)
    assert channel.send_generation == 0


def test_sessions_rekey_on_their_own_and_keep_talking() -> None:
    config = SessionConfig(
        keepalive_interval=1.0, channel=ChannelConfig(rekey_after_time=2.0, window_size=256)
    )
    alice, bob = session_pair(config)
    wire: list[tuple[float, PeerSession, bytes, tuple[str, int]]] = []
    received: list[bytes] = []
    now, sent = 0.0, 0
    while now < 30.0:
        if sent < 300 and alice.state is SessionState.CONNECTED:
            alice.send(b"m%d" % sent, now)
            sent += 1
        for session, source in ((alice, ALICE_PUBLIC), (bob, BOB_PUBLIC)):
            other = bob if session is alice else alice
            wire += [
                (now + 0.01, other, data, source) for data, _, _ in session.datagrams_to_send(now)
            ]
            while (event := session.next_event()) is not None:
                if isinstance(event, MessageReceived):
                    received.append(event.data)
        timers = [t for t in (alice.get_timer(), bob.get_timer()) if t is not None]
        now = min([*timers, *(at for at, *_ in wire), now + 0.1])
        for item in [w for w in wire if w[0] <= now]:
            wire.remove(item)
            item[1].receive_datagram(item[2], item[3], now)
        for session in (alice, bob):
            due = session.get_timer()
            if due is not None and due <= now:
                session.handle_timer(now)
                after = session.get_timer()
                assert after is None or after > now  # (a timer that stays due fires forever)
    assert alice.state is bob.state is SessionState.CONNECTED
    assert received == [b"m%d" % i for i in range(300)]
    for session in (alice, bob):
        channel = session._plane.channel
        assert channel is not None and channel.send_generation >= 8
