"""Punching on its own (peer.punching): what a tick sends, which probes count, the pacing,
and the NAT types the peer reports."""

from __future__ import annotations

import random

from natprobe.report import NatType
from peer.birthday import BirthdayConfig
from peer.punching import MAX_LEARNED_CANDIDATES, Punching, nat_type_of
from peer.routes import DIRECT, RELAY, ExtraSocket, Route
from peer.session import SessionConfig
from rvproto.messages import Introduction, Role

PUBLIC = ("198.51.100.2", 40002)
PRIVATE = ("10.0.2.3", 40002)
RELAYED = ("203.0.113.10", 50000)


def punching(
    *, own: NatType = NatType.FULL_CONE, other: str = "full-cone", relay_only: bool = False
) -> Punching:
    intro = Introduction(
        name="bob",
        public_key=bytes(32),
        public_endpoint=PUBLIC,
        private_endpoints=(PRIVATE,),
        role=Role.INITIATOR,
        token=bytes(16),
        punch_delay=0.5,
        nat_type=other,
        relayed_endpoint=RELAYED,
    )
    config = SessionConfig(punch_burst=3, birthday=BirthdayConfig(sockets=4, probes=8, batch=4))
    return Punching(config, intro, random.Random(1), 10.0, own_nat_type=own, relay_only=relay_only)


def test_nat_types_from_the_wire() -> None:
    assert nat_type_of("symmetric") is NatType.SYMMETRIC
    assert nat_type_of("port-restricted-cone") is NatType.PORT_RESTRICTED_CONE
    assert nat_type_of("relay-only") is NatType.UNKNOWN  # not a NAT type
    assert nat_type_of("") is NatType.UNKNOWN


def test_a_tick_goes_to_every_candidate_lan_first_then_the_relay_once_due() -> None:
    p = punching()
    assert p.next_at == 10.5  # the rendezvous's punch delay
    assert p.tick(10.5)
    first = p.burst(b"m1", 10.5, Route(RELAYED), birthday=True)
    assert first == [(b"m1", PRIVATE, DIRECT), (b"m1", PUBLIC, DIRECT)]
    assert p.tick(11.5)  # relay_after (1 s) from the first tick
    later = p.burst(b"m1", 11.5, Route(RELAYED), birthday=True)
    assert later[-1] == (b"m1", RELAYED, DIRECT)


def test_pacing_burst_then_slow_until_the_deadline() -> None:
    p = punching()
    gaps = []
    now = 10.5
    for _ in range(5):
        assert p.tick(now)
        p.schedule_next(now)
        assert p.next_at is not None
        gaps.append(round(p.next_at - now, 6))
        now = p.next_at
    assert gaps == [0.02, 0.02, 0.25, 0.25, 0.25]  # a burst of 3, then the slow tail
    assert not p.tick(10.5 + 10.0)  # punch_timeout from the first tick
    assert p.next_at is None


def test_probes_count_only_from_the_peers_ips_and_teach_a_few_routes() -> None:
    p = punching()
    assert not p.known_ip(Route(("192.0.2.66", 1)))
    assert p.known_ip(Route(("192.0.2.66", 1), RELAY))  # our allocation admits only the peer
    learnt = [Route((PUBLIC[0], 50000 + i)) for i in range(MAX_LEARNED_CANDIDATES + 2)]
    assert [p.learn(route) for route in learnt] == [True] * MAX_LEARNED_CANDIDATES + [False] * 2
    assert p.learn(Route(PUBLIC))  # known already: no budget spent
    assert len(p.candidates) == 2 + MAX_LEARNED_CANDIDATES
    assert p.answer_probe(Route(PUBLIC), 1.0)
    assert not p.answer_probe(Route(PUBLIC), 1.01)  # once per punch interval
    assert p.answer_probe(Route(PUBLIC, ExtraSocket(1)), 1.01)  # another route
    assert p.answer_probe(Route(PUBLIC), 1.02)


def test_the_birthday_trick_sprays_from_extra_sockets_unless_relay_only() -> None:
    hard = punching(own=NatType.SYMMETRIC, other="port-restricted-cone")
    assert hard.tick(10.5)
    extra = [t for t in hard.burst(b"m1", 10.5, None, birthday=True) if t[2] != DIRECT]
    assert [via for _, _, via in extra] == [ExtraSocket(i) for i in range(4)]
    assert all(address == PUBLIC for _, address, _ in extra)
    confined = punching(own=NatType.SYMMETRIC, other="port-restricted-cone", relay_only=True)
    assert confined.tick(10.5)
    assert all(t[2] == DIRECT for t in confined.burst(b"m1", 10.5, None, birthday=True))


def test_two_symmetric_nats_go_to_the_relay_at_once_and_say_so() -> None:
    hopeless = punching(own=NatType.SYMMETRIC, other="symmetric")
    assert hopeless.hopeless and "symmetric" in hopeless.relay_note
    assert hopeless.tick(10.5)
    assert (b"m1", RELAYED, DIRECT) in hopeless.burst(b"m1", 10.5, Route(RELAYED), birthday=True)
    # A relay-only peer is not that case (it punches nothing direct).
    assert not punching(own=NatType.SYMMETRIC, other="symmetric", relay_only=True).hopeless
