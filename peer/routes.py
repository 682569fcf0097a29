"""How a datagram leaves or reached the peer: a typed route beside the address.

The sans-I/O objects name a remote by ``Address`` and say *how* it is reached with a
``Via`` value next to it, never by tagging the address string:

* ``DIRECT``: the peer's one punching socket, straight to the address;
* ``RELAY``: through our own TURN allocation (the address is the remote peer's, the TURN
  client wraps the datagram for the relay);
* ``ExtraSocket(i)``: from the birthday trick's extra socket ``i`` (peer.birthday);
* ``TCP``: over the TCP connection to the rendezvous (and its relay), for a peer without
  UDP.

Adapters (asyncio, the simulator) map each ``Via`` to a socket; the cores only decide.
"""

from __future__ import annotations

from dataclasses import dataclass

from stunproto.attributes import Address


@dataclass(frozen=True, slots=True)
class Direct:
    """The punching socket."""


@dataclass(frozen=True, slots=True)
class ThroughRelay:
    """Our relay allocation: sent with the TURN client, received as relayed data."""


@dataclass(frozen=True, slots=True)
class ExtraSocket:
    """The birthday trick's extra socket number ``index`` (a fresh NAT mapping each)."""

    index: int


@dataclass(frozen=True, slots=True)
class OverTcp:
    """The TCP connection to the rendezvous server."""


Via = Direct | ThroughRelay | ExtraSocket | OverTcp

DIRECT = Direct()
RELAY = ThroughRelay()
TCP = OverTcp()


@dataclass(frozen=True, slots=True)
class Route:
    """A remote address and the way to reach it (what sessions compare and remember)."""

    address: Address
    via: Via = DIRECT

    def matches(self, address: Address, via: Via) -> bool:
        """Is this the route of a datagram from ``address`` over ``via``? (Compared without
        building a Route: this runs per datagram; the usual via is the very same object.)"""
        return self.address == address and (self.via is via or self.via == via)


# What the peer's sans-I/O objects hand to their adapters: bytes, where to, and how.
Transmit = tuple[bytes, Address, Via]
