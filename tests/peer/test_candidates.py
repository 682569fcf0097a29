"""Which introduced addresses a peer probes (peer.candidates): no reflector."""

from __future__ import annotations

import pytest

from peer.candidates import MAX_PRIVATE, sensible_introduction
from rvproto.messages import Introduction, Role

OURS = ("198.51.100.1", 40001)


def _intro(
    public: tuple[str, int],
    *private: tuple[str, int],
    relayed: tuple[str, int] | None = None,
) -> Introduction:
    return Introduction(
        name="mallory",
        public_key=bytes(32),
        public_endpoint=public,
        private_endpoints=tuple(private),
        role=Role.INITIATOR,
        token=bytes(16),
        punch_delay=0.0,
        nat_type="unknown",
        relayed_endpoint=relayed,
    )


def test_private_endpoints_of_a_peer_elsewhere_are_never_probed() -> None:
    # The attack: our LAN's hosts, our own services, claimed as the caller's LAN.
    intro = _intro(("203.0.113.7", 5000), ("10.0.1.1", 22), ("192.168.1.1", 80), ("127.0.0.1", 53))
    sensible = sensible_introduction(intro, OURS)
    assert sensible is not None
    assert sensible.private_endpoints == () and sensible.public_endpoint == intro.public_endpoint


def test_behind_our_own_nat_its_lan_addresses_are_probed_a_few_at_most() -> None:
    lan = [(f"10.0.1.{n}", 40000) for n in range(2, 12)]
    intro = _intro(("198.51.100.1", 40002), ("169.254.1.1", 40000), *lan)
    sensible = sensible_introduction(intro, OURS)
    assert sensible is not None
    assert sensible.private_endpoints == tuple(lan[:MAX_PRIVATE])  # (no link-local)


@pytest.mark.parametrize(
    "public",
    [
        ("127.0.0.1", 5000),
        ("169.254.3.3", 5000),
        ("224.0.0.1", 5000),
        ("0.0.0.0", 5000),
        ("255.255.255.255", 5000),
        ("::1", 5000),
        ("::ffff:127.0.0.1", 5000),
        ("ff02::1", 5000),
        ("203.0.113.7", 0),
    ],
)
def test_an_introduction_to_an_address_no_peer_can_have_is_ignored(public: tuple[str, int]) -> None:
    assert sensible_introduction(_intro(public), OURS) is None


def test_loopback_is_fine_when_the_rendezvous_is_on_this_host() -> None:
    intro = _intro(("127.0.0.1", 5000), ("127.0.0.1", 5000))
    assert sensible_introduction(intro, ("127.0.0.1", 6000)) == intro


def test_a_relayed_endpoint_on_loopback_is_dropped() -> None:
    intro = _intro(("203.0.113.7", 5000), relayed=("127.0.0.1", 3478))
    sensible = sensible_introduction(intro, OURS)
    assert sensible is not None and sensible.relayed_endpoint is None
