"""The rendezvous gateway's public ports, sans-I/O: who may publish, in which range, and
who owns each port (one owner per port; the owner's going offline frees its ports).

The gateway (peer.adapters.tunnel_gateway) asks ``claim`` for each PUBLISH request and
``release`` when the publication ends; binding the port is the adapter's, which calls
``release`` too when the bind fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from peer.tunnel.policy import Refusal
from peer.tunnel.specs import Protocol
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishConfig:
    ports: range  # the public ports peers may publish on
    allow: frozenset[str] | None = None  # the names that may publish (None: any peer)
    host: str = "0.0.0.0"  # where the public ports listen
    max_ports_per_peer: int = 16

    def __post_init__(self) -> None:
        if not self.ports or self.ports.start < 1 or self.ports.stop > 65536:
            raise ValueError("publish ports must be a range within 1-65535")
        if self.max_ports_per_peer < 1:
            raise ValueError("max_ports_per_peer must be at least 1")


@dataclass(frozen=True, slots=True)
class Publication:
    owner: str
    service: str
    port: int
    protocol: Protocol


class PublishTable:
    def __init__(self, config: PublishConfig) -> None:
        self.config = config
        self._ports: dict[tuple[Protocol, int], Publication] = {}

    def claim(self, owner: str, request: OpenRequest) -> Publication | Refusal:
        if request.kind is not RequestKind.PUBLISH:
            return Refusal(OpenStatus.BAD_REQUEST, "the gateway takes PUBLISH requests only")
        allow = self.config.allow
        if allow is not None and owner not in allow:
            return Refusal(OpenStatus.NOT_ALLOWED, f"{owner} may not publish on this server")
        port, ports = request.port, self.config.ports
        if port not in ports:
            return Refusal(
                OpenStatus.NOT_ALLOWED,
                f"port {port} is outside the published range {ports.start}-{ports.stop - 1}",
            )
        key = (request.protocol, port)
        current = self._ports.get(key)
        if current is not None:
            return Refusal(OpenStatus.PORT_TAKEN, f"{request.protocol.value} port {port} is taken")
        if len(self.owned_by(owner)) >= self.config.max_ports_per_peer:
            return Refusal(
                OpenStatus.NOT_ALLOWED,
                f"{owner} publishes {self.config.max_ports_per_peer} ports already",
            )
        publication = self._ports[key] = Publication(owner, request.name, port, request.protocol)
        return publication

    def release(self, publication: Publication) -> None:
        key = (publication.protocol, publication.port)
        if self._ports.get(key) == publication:
            del self._ports[key]

    def owned_by(self, owner: str) -> list[Publication]:
        return [p for p in self._ports.values() if p.owner == owner]

    def __len__(self) -> int:
        return len(self._ports)
