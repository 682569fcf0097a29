"""asyncio adapter: the exposing side of tunnels (``peer expose``, ``Peer.expose``).

It takes the connections of allowed peers (others are refused before they are taken:
their ``connect`` says why), reads each stream's request, asks the policy
(peer.tunnel.policy), connects to the target and splices the two. Every outcome is an
event: opened, closed with bytes each way, refused with the reason, which the peer asking
also gets in its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from typing import TYPE_CHECKING

import structlog

from peer.adapters.connection import Connection, Stream
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import READ_LIMIT, PipeResult, TaskSet, read_header, splice
from peer.adapters.tunnel_udp import ExposedFlows
from peer.errors import PeerError
from peer.tunnel.events import EventSink, Side, TunnelClosed, TunnelOpened, TunnelRefused
from peer.tunnel.policy import Accept, ExposePolicy, Refusal
from peer.tunnel.specs import Protocol, is_ip, join_host_port
from peer.tunnel.wire import OpenReply, OpenRequest, OpenStatus, RequestKind

if TYPE_CHECKING:
    from peer.adapters.peer import Peer

log = structlog.get_logger()
_LOOKUPS = (RequestKind.LOOKUP, RequestKind.LOOKUP_EXIT)

REQUEST_TIMEOUT = 30.0  # a stream that names nothing for this long is dropped
REFUSED_CODE = 2  # the stream reset code after a refusal (what was pipelined is dropped)


class Exposer:
    def __init__(
        self, me: Peer, policy: ExposePolicy, on_event: EventSink, links: TunnelLinks
    ) -> None:
        self._me = me
        self._links = links
        self.policy = policy
        self._emit = on_event
        self._ids = itertools.count(1)
        self._tasks = TaskSet()

    async def run(self) -> None:
        """Serve until cancelled."""
        self._me.screen_incoming(self._screen)
        try:
            while True:
                connection = await self._me.accept()
                self._links.offer(connection)
                self._tasks.spawn(self._serve_connection(connection))
        finally:
            self._me.screen_incoming(None)
            await self._tasks.close()

    def _screen(self, peer: str) -> str | None:
        reason = self.policy.screen(peer)
        if reason is not None:
            self._emit(TunnelRefused(Side.EXPOSE, next(self._ids), peer, "*", reason))
        return reason

    async def serve(self, connection: Connection) -> None:
        """Serve the streams of one connection until it ends (``run`` does this for each
        connection it takes; a publisher, for the one it made to the gateway)."""
        await self._serve_connection(connection)

    async def _serve_connection(self, connection: Connection) -> None:
        flows = ExposedFlows(connection, self.policy.config.udp_idle_timeout)
        try:
            while True:
                stream = await connection.accept_stream()
                self._tasks.spawn(self._serve_stream(connection, stream, flows))
        except PeerError:
            return  # the connection ended: its streams end with it
        finally:
            flows.close()

    async def _serve_stream(
        self, connection: Connection, stream: Stream, flows: ExposedFlows
    ) -> None:
        tunnel = next(self._ids)
        try:
            request = OpenRequest.parse(await read_header(stream, REQUEST_TIMEOUT, "request"))
        except PeerError as exc:
            log.info("tunnel_bad_request", peer=connection.peer, reason=str(exc))
            stream.reset(REFUSED_CODE)
            stream.forget()
            return
        service = "exit" if request.kind is RequestKind.CONNECT else request.name
        decision = self.policy.decide(connection.peer, request)
        if isinstance(decision, Accept) and request.kind in _LOOKUPS:
            _answer(stream, OpenReply(OpenStatus.OK, decision.protocol.value), end=True)
            return
        if isinstance(decision, Accept) and decision.protocol is Protocol.UDP:
            try:
                decision = await flows.open(stream, decision, tunnel, self._emit)
            except PeerError as exc:  # (the forwarder left, or the connection ended)
                self._gone(tunnel, connection.peer, service, stream, str(exc))
                return
            if isinstance(decision, Accept):
                return
        target = await self._connect(decision) if isinstance(decision, Accept) else decision
        if isinstance(target, Refusal):
            self._emit(TunnelRefused(Side.EXPOSE, tunnel, connection.peer, service, target.reason))
            _answer(stream, OpenReply(target.status, target.reason), end=True)
            return
        reader, writer = target
        try:
            stream.write(OpenReply(OpenStatus.OK).encode())
        except PeerError as exc:  # the client left while we connected to its target
            writer.close()
            self._gone(tunnel, connection.peer, service, stream, str(exc))
            return
        where = join_host_port(*writer.get_extra_info("peername")[:2])
        self._emit(TunnelOpened(Side.EXPOSE, tunnel, connection.peer, service, where))
        result = PipeResult()
        try:
            await splice(reader, writer, stream, result)
        except asyncio.CancelledError:
            closed = TunnelClosed(
                Side.EXPOSE, tunnel, connection.peer, service, *result.counts, "stopped"
            )
            self._emit(closed)
            raise
        self._emit(
            TunnelClosed(
                Side.EXPOSE,
                tunnel,
                connection.peer,
                service,
                result.sent,
                result.received,
                result.problem,
            )
        )

    def _gone(self, tunnel: int, peer: str, service: str, stream: Stream, reason: str) -> None:
        self._emit(TunnelClosed(Side.EXPOSE, tunnel, peer, service, 0, 0, reason))
        stream.reset(REFUSED_CODE)
        stream.forget()

    async def _connect(
        self, accept: Accept
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | Refusal:
        """The target's connection, or why not (refused, unreachable, not resolved, or an
        exit's name resolving only to forbidden addresses)."""
        timeout = self.policy.config.connect_timeout
        where = join_host_port(accept.host, accept.port)
        try:
            addresses = await self._addresses(accept)
        except OSError:
            return Refusal(OpenStatus.RESOLVE_FAILED, f"cannot resolve {accept.host}")
        if isinstance(addresses, Refusal):
            return addresses
        last: Refusal | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.open_connection(address, accept.port, limit=READ_LIMIT)
            except TimeoutError:
                last = Refusal(OpenStatus.UNREACHABLE, f"{where} did not answer in {timeout:g} s")
            except ConnectionRefusedError:
                last = Refusal(OpenStatus.CONNECTION_REFUSED, f"{where} refused the connection")
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                last = Refusal(OpenStatus.UNREACHABLE, f"{where}: {reason}")
        assert last is not None
        return last

    async def _addresses(self, accept: Accept) -> list[str] | Refusal:
        """A service's host as configured (the owner chose it), an exit's name resolved
        here and filtered by the policy."""
        if not accept.exit or is_ip(accept.host):
            return [accept.host]
        infos = await asyncio.get_running_loop().getaddrinfo(
            accept.host, accept.port, type=socket.SOCK_STREAM
        )
        resolved = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return self.policy.allowed_addresses(accept.host, resolved)


def _answer(stream: Stream, reply: OpenReply, *, end: bool) -> None:
    """Write the reply; after a refusal or a lookup, end the stream both ways."""
    with contextlib.suppress(PeerError):  # (the asking side may have gone meanwhile)
        stream.write(reply.encode())
        if end:
            stream.write_eof()
            stream.stop_reading(REFUSED_CODE)
    if end:
        stream.forget()
