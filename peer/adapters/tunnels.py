"""asyncio adapter: the tunnel functions of ``Peer`` (a mixin, so that an application
embeds what the CLI does)::

    async with Peer(server, identity=identity, name="bob") as me:
        await me.expose(["ssh=127.0.0.1:22"], allow=["alice"])   # until cancelled

    async with Peer(server, identity=identity, name="alice") as me:
        forward = await me.forward("8022", "bob:ssh")            # listening now
        await forward.serve_forever()
        socks = await me.socks("1080", via="bob")                 # bob: expose(exit=True)

Every connection to one peer rides one peer connection (peer.adapters.tunnel_links).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

from peer.adapters.tunnel_expose import Exposer
from peer.adapters.tunnel_forward import Forward
from peer.adapters.tunnel_gateway import Gateway
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_publish import publish_until_cancelled
from peer.adapters.tunnel_socks import SocksServer
from peer.errors import LocalProtocolError
from peer.tunnel.events import EventSink, ignore
from peer.tunnel.http_route import site_name
from peer.tunnel.policy import ExposeConfig, ExposePolicy
from peer.tunnel.publishing import PublishConfig
from peer.tunnel.specs import (
    ListenSpec,
    ServiceSpec,
    TargetSpec,
    TunnelSpecError,
    parse_listen,
    parse_service,
    parse_target,
)
from rvproto.names import GATEWAY_NAME, InvalidName, canonical_name

if TYPE_CHECKING:
    from peer.adapters.peer import Peer


class TunnelsMixin:
    _tunnel_links: TunnelLinks | None = None
    _tunnel_ids = itertools.count(1)

    def tunnel_links(self) -> TunnelLinks:
        if self._tunnel_links is None:
            self._tunnel_links = TunnelLinks(cast("Peer", self))
        return self._tunnel_links

    async def expose(
        self,
        services: Iterable[ServiceSpec | str] = (),
        *,
        allow: Iterable[str],
        exit: bool = False,
        exit_private: bool = False,
        on_event: EventSink = ignore,
        connect_timeout: float = 10.0,
        udp_idle_timeout: float = 60.0,
    ) -> None:
        """Serve ``services`` (and, with ``exit``, SOCKS connections) to the ``allow``ed
        peers until cancelled; connections from anyone else are refused."""
        try:
            config = ExposeConfig(
                services=tuple(_service(s) for s in services),
                allow=frozenset(canonical_name(name) for name in allow),
                exit=exit,
                exit_private=exit_private,
                connect_timeout=connect_timeout,
                udp_idle_timeout=udp_idle_timeout,
            )
        except (ValueError, InvalidName) as exc:
            raise LocalProtocolError(str(exc)) from None
        exposer = Exposer(cast("Peer", self), ExposePolicy(config), on_event, self.tunnel_links())
        await exposer.run()

    async def forward(
        self,
        listen: ListenSpec | str,
        target: TargetSpec | str,
        *,
        on_event: EventSink = ignore,
        udp_idle_timeout: float = 60.0,
    ) -> Forward:
        """Listen at ``listen`` ("8022", "127.0.0.1:8022") and carry each connection (or
        UDP flow) to ``target`` ("bob:ssh"); raises if the peer cannot be reached or
        refuses the service. ``close()`` the result when done."""
        try:
            where = parse_listen(listen) if isinstance(listen, str) else listen
            to = parse_target(target) if isinstance(target, str) else target
        except TunnelSpecError as exc:
            raise LocalProtocolError(str(exc)) from None
        forward = Forward(
            self.tunnel_links(),
            to,
            on_event=on_event,
            ids=self._tunnel_ids,
            udp_idle_timeout=udp_idle_timeout,
        )
        try:
            await forward.start(where)
        except BaseException:
            await forward.aclose()
            raise
        return forward

    async def socks(
        self,
        listen: ListenSpec | str,
        *,
        via: str,
        credentials: Mapping[str, str] | None = None,
        on_event: EventSink = ignore,
    ) -> SocksServer:
        """A SOCKS5 server at ``listen`` whose connections leave from ``via`` (a peer that
        exposes itself as an exit to us); with ``credentials`` (user -> password) clients
        must give one of them (RFC 1929). ``close()`` the result when done."""
        try:
            where = parse_listen(listen) if isinstance(listen, str) else listen
            exit_peer = canonical_name(via)
            server = SocksServer(
                self.tunnel_links(),
                exit_peer,
                credentials=credentials,
                on_event=on_event,
                ids=self._tunnel_ids,
            )
        except (TunnelSpecError, InvalidName, ValueError) as exc:
            raise LocalProtocolError(str(exc)) from None
        try:
            await server.start(where)
        except BaseException:
            await server.aclose()
            raise
        return server

    async def publish(
        self,
        publications: Iterable[tuple[ServiceSpec | str, int | str]],
        *,
        on_event: EventSink = ignore,
        retry: bool = True,
    ) -> None:
        """Have the rendezvous's gateway open each public port, (service, port), or route
        an HTTP site to it, (service, "host.example"), and carry outside connections to
        the service, until cancelled. If the connection to the gateway ends, reconnect and
        publish again (``retry``); a refusal raises."""
        pairs = [(_service(service), _where(where)) for service, where in publications]
        if not pairs:
            raise LocalProtocolError("nothing to publish")
        config = ExposeConfig(
            services=tuple(service for service, _ in pairs), allow=frozenset({GATEWAY_NAME})
        )
        me = cast("Peer", self)
        await publish_until_cancelled(
            me, ExposePolicy(config), pairs, self.tunnel_links(), on_event, retry=retry
        )

    async def gateway(self, config: PublishConfig, *, on_event: EventSink = ignore) -> None:
        """Be the rendezvous's publish gateway until cancelled (rendezvous --publish-ports
        runs this for the server; peer.adapters.tunnel_gateway)."""
        await Gateway(cast("Peer", self), config, on_event, self.tunnel_links()).run()


def _service(spec: ServiceSpec | str) -> ServiceSpec:
    try:
        return parse_service(spec) if isinstance(spec, str) else spec
    except TunnelSpecError as exc:
        raise LocalProtocolError(str(exc)) from None


def _where(where: int | str) -> int | str:
    if isinstance(where, int):
        return where
    try:
        return site_name(where)
    except ValueError as exc:
        raise LocalProtocolError(str(exc)) from None
