"""How a datagram reached the server, or leaves it: a typed route beside the address.

The server's sans-I/O pieces name a remote by ``Address`` and say *by which of our
sockets* it is reached with a ``Via`` next to it:

* ``UdpSocket(local)``: one of the STUN sockets (up to four with RFC 5780: primary and
  alternate IP, each with primary and alternate port), by its configured address;
* ``TcpConnection(listener)``: the TCP connection from (or to) the address beside it, on
  the listener at ``listener`` (a listener holds at most one connection per remote
  address, so the pair names one connection);
* ``RelaySocket(relay)``: a TURN allocation's relay socket, by its bound address.

Clients come in by the first two (``ClientVia``); answers go back by the route their request
came by. Adapters (asyncio, the simulator) map each route to a socket or a connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from stunproto.attributes import Address


@dataclass(frozen=True, slots=True)
class UdpSocket:
    """The STUN socket bound at ``local`` (as configured)."""

    local: Address


@dataclass(frozen=True, slots=True)
class TcpConnection:
    """The connection from the remote address beside this route, on the TCP listener that
    serves the primary address ``listener``."""

    listener: Address


@dataclass(frozen=True, slots=True)
class RelaySocket:
    """The relay socket of a TURN allocation, bound at ``relay``."""

    relay: Address


ClientVia = UdpSocket | TcpConnection
Via = UdpSocket | TcpConnection | RelaySocket


@dataclass(frozen=True, slots=True)
class Transmit:
    """One datagram (or, over TCP, one message) for an adapter to send."""

    data: bytes
    destination: Address
    via: Via


def address_text(address: Address) -> str:
    """``host:port``, as the server's log lines show an address."""
    return f"{address[0]}:{address[1]}"
