"""The rendezvous gateway's public ports, sans-I/O: who may publish, in which range, and
who owns each port (one owner per port; the owner's going offline frees its ports), and
which HTTP site (a host name on the shared HTTP port) belongs to whom.

The gateway (peer.adapters.tunnel_gateway) asks ``claim`` for each PUBLISH request and
``release`` when the publication ends; binding the port is the adapter's, which calls
``release`` too when the bind fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from peer.tunnel.http_route import site_name
from peer.tunnel.policy import Refusal
from peer.tunnel.specs import Protocol
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishConfig:
    ports: range = range(0)  # the public ports peers may publish on
    allow: frozenset[str] | None = None  # the names that may publish (None: any peer)
    host: str = "0.0.0.0"  # where the public ports listen
    max_ports_per_peer: int = 16  # ports and HTTP sites together
    http_port: int | None = None  # one public HTTP port for every site, routed by Host

    def __post_init__(self) -> None:
        if self.ports and (self.ports.start < 1 or self.ports.stop > 65536):
            raise ValueError("publish ports must be a range within 1-65535")
        if not self.ports and self.http_port is None:
            raise ValueError("nothing to publish on: give ports or an HTTP port")
        if self.http_port is not None and not 1 <= self.http_port <= 65535:
            raise ValueError("the HTTP port must be 1-65535")
        if self.http_port is not None and self.http_port in self.ports:
            raise ValueError("the HTTP port may not be one of the publish ports")
        if self.max_ports_per_peer < 1:
            raise ValueError("max_ports_per_peer must be at least 1")


@dataclass(frozen=True, slots=True)
class Publication:
    owner: str
    service: str
    port: int
    protocol: Protocol
    site: str = ""  # an HTTP site's host name (port is then the shared HTTP port)


class PublishTable:
    def __init__(self, config: PublishConfig) -> None:
        self.config = config
        self._ports: dict[tuple[Protocol, int], Publication] = {}
        self._sites: dict[str, Publication] = {}  # HTTP host name -> its publication

    def claim(self, owner: str, request: OpenRequest) -> Publication | Refusal:
        if request.kind not in (RequestKind.PUBLISH, RequestKind.PUBLISH_HTTP):
            return Refusal(OpenStatus.BAD_REQUEST, "the gateway takes PUBLISH requests only")
        allow = self.config.allow
        if allow is not None and owner not in allow:
            return Refusal(OpenStatus.NOT_ALLOWED, f"{owner} may not publish on this server")
        if len(self.owned_by(owner)) >= self.config.max_ports_per_peer:
            return Refusal(
                OpenStatus.NOT_ALLOWED,
                f"{owner} publishes {self.config.max_ports_per_peer} ports already",
            )
        if request.kind is RequestKind.PUBLISH_HTTP:
            return self._claim_site(owner, request)
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
        publication = self._ports[key] = Publication(owner, request.name, port, request.protocol)
        return publication

    def _claim_site(self, owner: str, request: OpenRequest) -> Publication | Refusal:
        http_port = self.config.http_port
        if http_port is None:
            return Refusal(OpenStatus.NOT_ALLOWED, "this server publishes no HTTP sites")
        service, _, host = request.name.partition("@")
        try:
            site = site_name(host)
        except ValueError as exc:
            return Refusal(OpenStatus.BAD_REQUEST, str(exc))
        if site in self._sites:
            return Refusal(OpenStatus.PORT_TAKEN, f"the site {site} is taken")
        publication = Publication(owner, service, http_port, Protocol.TCP, site)
        self._sites[site] = publication
        return publication

    def site(self, host: str) -> Publication | None:
        """The publication that serves HTTP requests for ``host``."""
        return self._sites.get(host)

    def release(self, publication: Publication) -> None:
        if publication.site:
            if self._sites.get(publication.site) == publication:
                del self._sites[publication.site]
            return
        key = (publication.protocol, publication.port)
        if self._ports.get(key) == publication:
            del self._ports[key]

    def owned_by(self, owner: str) -> list[Publication]:
        held = [*self._ports.values(), *self._sites.values()]
        return [p for p in held if p.owner == owner]

    def __len__(self) -> int:
        return len(self._ports) + len(self._sites)
