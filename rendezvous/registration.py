"""A logged-in peer as the rendezvous holds it, and what an introduction tells of it."""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.routes import ClientVia
from rvproto.messages import Introduction, Role
from stunproto.attributes import Address


@dataclass(slots=True)
class Registration:
    name: str
    public_key: bytes
    endpoint: Address  # observed: where its requests come from
    via: ClientVia  # the route it logged in by: introductions go back that way
    private_endpoints: tuple[Address, ...]
    nat_type: str
    session_key: bytes
    rtt: float
    expires: float
    relayed: Address | None = None  # its relay allocation, once it has told us


def introduce(peer: Registration, role: Role, token: bytes, delay: float) -> Introduction:
    """What the other side of an introduction learns of ``peer``."""
    return Introduction(
        name=peer.name,
        public_key=peer.public_key,
        public_endpoint=peer.endpoint,
        private_endpoints=peer.private_endpoints,
        role=role,
        token=token,
        punch_delay=max(delay, 0.0),
        nat_type=peer.nat_type,
        relayed_endpoint=peer.relayed,
    )
