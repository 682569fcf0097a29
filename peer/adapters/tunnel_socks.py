"""asyncio adapter: ``peer socks``, a local SOCKS5 server (RFC 1928, RFC 1929 user and
password when configured) whose connections leave from another peer, the exit (a peer
running ``expose --exit``). The negotiation is peer.tunnel.socks5's; the host a client
names is sent as it is, so that a DNS name is resolved at the exit (what
``curl --socks5-hostname`` asks for), where its addresses are also checked.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

from peer.adapters.tunnel_forward import carry, lookup
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import READ_LIMIT, TaskSet
from peer.errors import PeerError
from peer.tunnel.events import EventSink, Side, TunnelRefused
from peer.tunnel.socks5 import (
    ConnectRequested,
    NegotiationFailed,
    ReplyCode,
    SocksNegotiation,
    SocksServerConfig,
    SocksState,
)
from peer.tunnel.specs import ListenSpec, join_host_port
from peer.tunnel.wire import OpenReply, OpenRequest, OpenStatus, RequestKind

NEGOTIATION_TIMEOUT = 30.0  # a client that has not asked for anything by then is dropped
# What a SOCKS client is told for each of the exit's answers.
SOCKS_REPLY = {
    OpenStatus.OK: ReplyCode.SUCCEEDED,
    OpenStatus.NOT_ALLOWED: ReplyCode.NOT_ALLOWED,
    OpenStatus.FORBIDDEN_TARGET: ReplyCode.NOT_ALLOWED,
    OpenStatus.CONNECTION_REFUSED: ReplyCode.CONNECTION_REFUSED,
    OpenStatus.UNREACHABLE: ReplyCode.HOST_UNREACHABLE,
    OpenStatus.RESOLVE_FAILED: ReplyCode.HOST_UNREACHABLE,
}


class SocksServer:
    """Started: ``address`` is where it listens; ``serve_forever`` waits until closed."""

    def __init__(
        self,
        links: TunnelLinks,
        via: str,
        *,
        credentials: Mapping[str, str] | None,
        on_event: EventSink,
        ids: itertools.count[int],
    ) -> None:
        self._links = links
        self.via = via
        self._config = SocksServerConfig(credentials=credentials)
        self._emit = on_event
        self._ids = ids
        self.address: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet()
        self._closed = asyncio.Event()

    async def start(self, listen: ListenSpec) -> None:
        """Check that the peer is an exit for us, then listen."""
        await lookup(await self._links.get(self.via), "exit", exit=True)
        self._server = await asyncio.start_server(
            self._spawn, listen.host, listen.port, limit=READ_LIMIT, backlog=1024
        )
        self.address = self._server.sockets[0].getsockname()[:2]

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.close()
        await self._tasks.close()

    def _spawn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.spawn(self._client(reader, writer))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tunnel = next(self._ids)
        negotiation = SocksNegotiation(self._config)
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                request = await _negotiate(negotiation, reader, writer)
        except (TimeoutError, OSError):
            request = NegotiationFailed("no SOCKS request in time")
        if isinstance(request, NegotiationFailed):
            self._emit(TunnelRefused(Side.FORWARD, tunnel, self.via, "socks", request.reason))
            writer.close()
            return
        target = join_host_port(request.host, request.port)

        def on_reply(reply: OpenReply) -> None:
            if negotiation.state is SocksState.WAITING_FOR_EXIT:
                negotiation.reply(SOCKS_REPLY.get(reply.status, ReplyCode.GENERAL_FAILURE))
                writer.write(negotiation.data_to_send())

        try:
            await self._links.get(self.via)
        except PeerError as exc:
            on_reply(OpenReply(OpenStatus.UNREACHABLE, str(exc)))
            self._emit(TunnelRefused(Side.FORWARD, tunnel, self.via, target, str(exc)))
            writer.close()
            return
        await carry(
            self._links,
            self.via,
            OpenRequest(RequestKind.CONNECT, request.host, request.port),
            reader,
            writer,
            emit=self._emit,
            tunnel=tunnel,
            service=target,
            on_reply=on_reply,
            early=negotiation.leftover,
        )


async def _negotiate(
    negotiation: SocksNegotiation, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> ConnectRequested | NegotiationFailed:
    while True:
        data = await reader.read(4096)
        if not data:
            return NegotiationFailed("the client left before its request")
        negotiation.receive_data(data)
        if answer := negotiation.data_to_send():
            writer.write(answer)
            await writer.drain()
        event = negotiation.next_event()
        if event is not None:
            return event
