"""asyncio adapter: the forwarding side of tunnels (``peer forward``, ``Peer.forward``),
like ``ssh -L``: a local listener whose every connection becomes a stream to one service
of one peer, all over the one connection to that peer (peer.adapters.tunnel_links).

Starting asks the peer first (a LOOKUP): a service that is not there, or not for us, is
an error at once rather than at the first client; its answer also says whether to
listen on TCP or on UDP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from peer.adapters.connection import Connection
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import (
    READ_LIMIT,
    PipeResult,
    TaskSet,
    TunnelRefusedError,
    abort_tcp,
    open_tunnel_stream,
    raise_refusal,
    splice,
)
from peer.adapters.tunnel_udp_forward import UdpForwarder
from peer.errors import PeerError, PeerTimeout
from peer.tunnel.events import EventSink, Side, TunnelClosed, TunnelOpened, TunnelRefused
from peer.tunnel.specs import ListenSpec, Protocol, TargetSpec, join_host_port
from peer.tunnel.wire import OpenReply, OpenRequest, OpenStatus, RequestKind


async def answer_of(
    connection: Connection, reply_of: Callable[[], asyncio.Future[OpenReply]]
) -> OpenReply:
    """The reply to a first request on a new connection; ConnectionRefused when the peer
    closed the connection instead (peer.adapters.tunnel_pipe.raise_refusal)."""
    try:
        return await reply_of()
    except PeerError:
        raise_refusal(connection)
        raise


def _missing_reply(exc: PeerError) -> OpenReply:
    """The refusal a reply that never came amounts to, so that the client is told (a SOCKS
    client gets its reply, with the reason in the refused event) instead of a bare reset."""
    status = OpenStatus.UNREACHABLE if isinstance(exc, PeerTimeout) else OpenStatus.FAILED
    return OpenReply(status, str(exc))


async def lookup(connection: Connection, service: str, *, exit: bool = False) -> Protocol:
    """Whether ``service`` (or, with ``exit``, the SOCKS exit) is there for us at the
    peer, and what it speaks."""
    kind = RequestKind.LOOKUP_EXIT if exit else RequestKind.LOOKUP
    stream, reply_of = await open_tunnel_stream(connection, OpenRequest(kind, service))
    try:
        reply = await answer_of(connection, reply_of)
    finally:
        stream.forget()
    if not reply.ok:
        raise TunnelRefusedError(f"{connection.peer} refused {service}: {reply.reason}")
    try:
        return Protocol(reply.reason)
    except ValueError:
        raise TunnelRefusedError(f"{connection.peer}: {service} speaks {reply.reason!r}") from None


class Forward:
    """A forward, started: ``address`` is where it listens; ``serve_forever`` waits until
    ``close``."""

    def __init__(
        self,
        links: TunnelLinks,
        target: TargetSpec,
        *,
        on_event: EventSink,
        ids: itertools.count[int],
        udp_idle_timeout: float = 60.0,
    ) -> None:
        self._links = links
        self.target = target
        self._emit = on_event
        self._ids = ids
        self._udp_idle_timeout = udp_idle_timeout
        self.protocol = Protocol.TCP
        self.address: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None
        self._udp: UdpForwarder | None = None
        self._tasks = TaskSet()
        self._closed = asyncio.Event()

    async def start(self, listen: ListenSpec) -> None:
        connection = await self._links.get(self.target.peer)
        self.protocol = await lookup(connection, self.target.service)
        if self.protocol is Protocol.UDP:
            self._udp = UdpForwarder(
                self._links, self.target, self._emit, self._ids, self._udp_idle_timeout
            )
            self.address = await self._udp.start(listen)
            return
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
        if self._udp is not None:
            await self._udp.aclose()
        await self._tasks.close()

    def _spawn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.spawn(self._client(reader, writer))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await carry(
            self._links,
            self.target.peer,
            OpenRequest(RequestKind.SERVICE, self.target.service),
            reader,
            writer,
            emit=self._emit,
            tunnel=next(self._ids),
            service=self.target.service,
        )


async def carry(
    links: TunnelLinks,
    peer: str,
    request: OpenRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    emit: EventSink,
    tunnel: int,
    service: str,
    on_reply: Callable[[OpenReply], None] | None = None,
    early: bytes = b"",
) -> None:
    """One local TCP connection through the tunnel to ``peer``, to its end; events for
    each step. ``on_reply`` sees the reply first (the SOCKS server answers its client);
    ``early`` is what the client sent that was read already (behind its SOCKS request)."""
    client = join_host_port(*writer.get_extra_info("peername")[:2])
    refusal: list[str] = []
    try:
        connection = await links.get(peer)
        stream, reply_of = await open_tunnel_stream(connection, request)
        if early:
            stream.write(early)
    except PeerError as exc:
        emit(TunnelRefused(Side.FORWARD, tunnel, peer, service, str(exc)))
        if on_reply is None:
            abort_tcp(writer)
        else:  # (the SOCKS client reads why, then the end)
            on_reply(_missing_reply(exc))
            writer.close()
        return

    async def gate() -> None:
        try:
            reply = await reply_of()
        except PeerError as exc:  # no reply: a timeout, the stream or the connection gone
            reply = _missing_reply(exc)
        if on_reply is not None:
            on_reply(reply)
        if not reply.ok:
            refusal.append(reply.reason)
            if on_reply is None:
                abort_tcp(writer)  # as the target did (or would have): "connection reset"
            raise TunnelRefusedError(reply.reason)
        emit(TunnelOpened(Side.FORWARD, tunnel, peer, service, client))

    result = PipeResult(sent=len(early))
    try:
        await splice(reader, writer, stream, result, gate=gate())
    except asyncio.CancelledError:  # the forward stops: its open tunnels are cut
        if not refusal:
            emit(TunnelClosed(Side.FORWARD, tunnel, peer, service, *result.counts, "stopped"))
        raise
    if refusal:
        emit(TunnelRefused(Side.FORWARD, tunnel, peer, service, refusal[0]))
        return
    emit(
        TunnelClosed(
            Side.FORWARD, tunnel, peer, service, result.sent, result.received, result.problem
        )
    )
