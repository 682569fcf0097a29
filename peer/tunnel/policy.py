"""Who may open what on an exposing peer: one object decides, default deny.

A request names a service or, at an exit, a host and port; the peer asking is the name the
channel's handshake proved (its key is the one pinned for that name, peer.known_peers), so
``--allow alice`` means alice's key, not whoever calls itself alice later.

An exit refuses the addresses that would turn it into a door to its own side: loopback,
link-local, the private and shared ranges (RFC 1918, RFC 6598, unique local IPv6), and
anything not unicast, unless ``exit_private`` says otherwise. The check runs on every
address a name resolves to, at the exit, after resolution: a DNS name that points to
127.0.0.1 is refused like 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from peer.tunnel.specs import Protocol, ServiceSpec
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind

_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(text)
    for text in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",  # multicast, reserved and broadcast
        "::/127",  # unspecified and loopback
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposeConfig:
    services: tuple[ServiceSpec, ...] = ()
    allow: frozenset[str] = frozenset()  # canonical peer names (rvproto.names)
    exit: bool = False  # the allowed peers may also CONNECT anywhere the rules allow
    exit_private: bool = False  # ... private networks, loopback and link-local included
    connect_timeout: float = 10.0  # for the exposing side's connection to its target
    udp_idle_timeout: float = 60.0  # a UDP flow nobody used for this long is forgotten

    def __post_init__(self) -> None:
        names = [service.name for service in self.services]
        if len(set(names)) != len(names):
            raise ValueError("two services with the same name")
        if not self.services and not self.exit:
            raise ValueError("nothing to expose: name a service or give --exit")
        if not self.allow:
            raise ValueError("nobody allowed: give --allow PEER")
        if self.connect_timeout <= 0 or self.udp_idle_timeout <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True, slots=True)
class Accept:
    """Connect to ``host`` (a name for the exit's resolver, or an IP) at ``port``."""

    host: str
    port: int
    protocol: Protocol
    service: str  # the service's name, or "exit" for a CONNECT
    # An exit's target: a name is resolved there and each address checked by the policy
    # (a service's host is the owner's choice and is used as given).
    exit: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    status: OpenStatus
    reason: str


Decision = Accept | Refusal


class ExposePolicy:
    def __init__(self, config: ExposeConfig) -> None:
        self.config = config
        self._services = {service.name: service for service in config.services}

    def allows_peer(self, peer: str) -> bool:
        return peer in self.config.allow

    def screen(self, peer: str) -> str | None:
        """For Peer.screen_incoming: a connection from a peer nobody allowed is refused
        before it is taken (its connect() says why)."""
        return None if self.allows_peer(peer) else f"{peer} is not allowed here"

    def decide(self, peer: str, request: OpenRequest) -> Decision:
        if not self.allows_peer(peer):
            return Refusal(OpenStatus.NOT_ALLOWED, f"{peer} is not allowed here")
        if request.kind is RequestKind.LOOKUP_EXIT:
            if not self.config.exit:
                return Refusal(OpenStatus.NOT_ALLOWED, "this peer is not an exit")
            return Accept("", 0, Protocol.TCP, "exit", exit=True)
        if request.kind is not RequestKind.CONNECT:
            service = self._services.get(request.name)
            if service is None:
                return Refusal(OpenStatus.UNKNOWN_SERVICE, f"no service {request.name!r}")
            lookup = request.kind is RequestKind.LOOKUP
            if not lookup and service.protocol is not request.protocol:
                return Refusal(
                    OpenStatus.BAD_REQUEST,
                    f"{service.name} is {service.protocol.value}, not {request.protocol.value}",
                )
            return Accept(service.host, service.port, service.protocol, service.name)
        if not self.config.exit:
            return Refusal(OpenStatus.NOT_ALLOWED, "this peer is not an exit")
        if request.protocol is not Protocol.TCP:
            return Refusal(OpenStatus.BAD_REQUEST, "the exit carries TCP only")
        if (refusal := self.check_address(request.name)) is not None:
            return refusal
        return Accept(request.name, request.port, Protocol.TCP, "exit", exit=True)

    def check_address(self, host: str) -> Refusal | None:
        """For a literal IP (a name passes: its addresses are checked once resolved)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if self.config.exit_private or not forbidden_address(address):
            return None
        return Refusal(OpenStatus.FORBIDDEN_TARGET, f"the exit does not connect to {host}")

    def allowed_addresses(self, host: str, addresses: Iterable[str]) -> list[str] | Refusal:
        """Of what ``host`` resolved to, the addresses the exit may connect to."""
        if self.config.exit_private:
            return list(addresses)
        allowed = [a for a in addresses if not forbidden_address(ipaddress.ip_address(a))]
        if not allowed:
            return Refusal(
                OpenStatus.FORBIDDEN_TARGET,
                f"{host} resolves only to addresses the exit does not connect to",
            )
        return allowed


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _FORBIDDEN_NETWORKS)
