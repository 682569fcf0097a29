"""Which of an introduction's addresses a peer may probe: the rendezvous passes on what the
other side reported about itself, so a peer that probed everything could be aimed at any
address (three CONNECTs once made a peer send 1,704 probes to addresses the caller chose,
its own loopback services and LAN included). Sans-I/O; the agent applies it to every
introduction before a session sees it.

* Private endpoints only when the other side's public IP is ours: then we are behind the
  same NAT and its LAN addresses are ours to reach; otherwise they name hosts on our LAN
  that the other side has no business making us probe. At most ``MAX_PRIVATE`` of them.
* Never a multicast, unspecified or broadcast address; loopback and link-local only when
  our own public address is of that kind too (a rendezvous on this host or this link, as
  in development), since only then can the other side be there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from rvproto.messages import Introduction
from stunproto.attributes import Address

__all__ = ["MAX_PRIVATE", "sensible_introduction"]

MAX_PRIVATE = 4  # a host has a few LAN addresses; more is a probe budget being spent


def sensible_introduction(intro: Introduction, own_public: Address | None) -> Introduction | None:
    """``intro`` with only the addresses worth probing, or None if even its public
    endpoint is not (the introduction is then ignored)."""
    own = _address(own_public[0]) if own_public is not None else None
    if not _worth_probing(intro.public_endpoint, own):
        return None
    private: tuple[Address, ...] = ()
    if own_public is not None and own_public[0] == intro.public_endpoint[0]:
        private = tuple(a for a in intro.private_endpoints if _worth_probing(a, own))
        private = private[:MAX_PRIVATE]
    relayed = intro.relayed_endpoint
    if relayed is not None and not _worth_probing(relayed, own):
        relayed = None
    if private == intro.private_endpoints and relayed == intro.relayed_endpoint:
        return intro
    return replace(intro, private_endpoints=private, relayed_endpoint=relayed)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _worth_probing(
    endpoint: Address, own: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> bool:
    address = _address(endpoint[0])
    if address is None or not 0 < endpoint[1] < 65536:
        return False
    if address.is_multicast or address.is_unspecified or address == _BROADCAST:
        return False
    if address.is_loopback:
        return own is not None and own.is_loopback
    if address.is_link_local:
        return own is not None and own.is_link_local
    return True


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
