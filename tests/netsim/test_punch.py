"""Sanity check of the NAT model: simultaneous-open hole punching across every pair of
classic NAT kinds succeeds or fails as the classic table says."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from netsim import Address, NatConfig, Network
from netsim.apps import Reflector, parse_address

STUN = ("203.0.113.1", 3478)


class Puncher:
    """Learns its public endpoint from a reflector, then, once given the peer's, sends a
    probe every ``interval`` until it hears from the peer. Like ICE it answers (and
    adopts) the source the peer's packets actually come from (peer-reflexive)."""

    def __init__(self, *, interval: float = 0.05, attempts: int = 40) -> None:
        self.public: Address | None = None
        self.peer: Address | None = None
        self.connected_at: float | None = None
        self._interval, self._attempts = interval, attempts
        self._next: float | None = None
        self._outbox: list[tuple[bytes, Address]] = [(b"whoami", STUN)]

    def punch(self, peer: Address, now: float) -> None:
        self.peer, self._next = peer, now

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if source == STUN:
            self.public = parse_address(data)
        elif data in (b"probe", b"ack"):
            if self.connected_at is None:
                self.connected_at = now
            self.peer = source
            if data == b"probe":
                self._outbox.append((b"ack", source))

    def handle_timer(self, now: float) -> None:
        assert self.peer is not None and self._next is not None
        if self.connected_at is not None or self._attempts == 0:
            self._next = None
            return
        self._outbox.append((b"probe", self.peer))
        self._attempts -= 1
        self._next = now + self._interval

    def get_timer(self) -> float | None:
        return self._next

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out


KINDS: dict[str, Callable[[], NatConfig]] = {
    "full-cone": NatConfig.full_cone,
    "restricted-cone": NatConfig.restricted_cone,
    "port-restricted-cone": NatConfig.port_restricted_cone,
    "symmetric": NatConfig.symmetric,
}
FAILS = {
    frozenset({"symmetric"}),
    frozenset({"symmetric", "port-restricted-cone"}),
}


def punch(kind_a: str, kind_b: str, *, rtt: float = 0.1, seed: int = 1) -> tuple[bool, float]:
    net = Network(rng=random.Random(seed))
    net.add_host("stun", STUN[0], delay=rtt / 8).bind(Reflector(), STUN[1])
    peers = []
    for name, kind, ip in [("a", kind_a, "198.51.100.1"), ("b", kind_b, "198.51.100.2")]:
        nat = net.add_nat(f"nat-{name}", ip, KINDS[kind](), delay=rtt / 8)
        peer = Puncher()
        net.add_host(name, "192.168.1.2", behind=nat, delay=rtt / 8).bind(peer, 40000)
        peers.append(peer)
    a, b = peers
    assert net.run_until(lambda: a.public is not None and b.public is not None, timeout=5)
    # The rendezvous step, out of band: each learns the other's server-reflexive address.
    assert a.public is not None and b.public is not None
    start = net.now
    a.punch(b.public, start)
    b.punch(a.public, start)
    ok = net.run_until(lambda: a.connected_at is not None and b.connected_at is not None, timeout=5)
    return ok, net.now - start


@pytest.mark.parametrize(
    ("kind_a", "kind_b"), list(itertools.combinations_with_replacement(KINDS, 2))
)
def test_punch_matrix(kind_a: str, kind_b: str) -> None:
    ok, _ = punch(kind_a, kind_b)
    assert ok == (frozenset({kind_a, kind_b}) not in FAILS)


@pytest.mark.parametrize("rtt", [0.020, 0.100, 0.300])
def test_port_restricted_pair_connects_in_one_way_time(rtt: float) -> None:
    ok, elapsed = punch("port-restricted-cone", "port-restricted-cone", rtt=rtt)
    assert ok
    # Both probes leave at once and each NAT has opened its hole (rtt/8 after start) long
    # before the other's probe reaches it (3 rtt/8): both arrive after the one-way time.
    assert elapsed == pytest.approx(rtt / 2, abs=1e-12)
