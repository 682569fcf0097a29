"""asyncio adapter: the forwarding side of a UDP service: one local UDP socket, a flow
per client address (peer.adapters.tunnel_udp). A client's first datagrams wait, a few,
while its flow opens; a refused flow drops them and says why once."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import TaskSet, open_tunnel_stream
from peer.adapters.tunnel_udp import Deliver, Flow
from peer.errors import PeerError
from peer.tunnel.events import EventSink, Side, TunnelClosed, TunnelOpened, TunnelRefused
from peer.tunnel.specs import ListenSpec, Protocol, TargetSpec, join_host_port
from peer.tunnel.wire import OpenRequest, RequestKind

MAX_WAITING = 64  # datagrams of one client kept while its flow opens

ClientAddress = tuple[str, int]


class _Client:
    __slots__ = ("flow", "waiting")

    def __init__(self) -> None:
        self.flow: Flow | None = None
        self.waiting: deque[bytes] = deque(maxlen=MAX_WAITING)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, forwarder: UdpForwarder) -> None:
        self.forwarder = forwarder

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.forwarder._from_client(data, (str(addr[0]), addr[1]))

    def error_received(self, exc: Exception) -> None:
        pass  # a client's port went away: its flow idles out


class UdpForwarder:
    def __init__(
        self,
        links: TunnelLinks,
        target: TargetSpec,
        emit: EventSink,
        ids: itertools.count[int],
        idle_timeout: float,
    ) -> None:
        self._links = links
        self._target = target
        self._emit = emit
        self._ids = ids
        self._idle_timeout = idle_timeout
        self._clients: dict[ClientAddress, _Client] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks = TaskSet()

    async def start(self, listen: ListenSpec) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=(listen.host, listen.port)
        )
        address: tuple[str, int] = self._transport.get_extra_info("sockname")[:2]
        return address

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self._tasks.close()

    def _from_client(self, data: bytes, address: ClientAddress) -> None:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client()
            client.waiting.append(data)
            self._tasks.spawn(self._serve(address, client))
        elif client.flow is None:
            client.waiting.append(data)
        else:
            client.flow.send(data)

    async def _serve(self, address: ClientAddress, client: _Client) -> None:
        tunnel, peer, service = next(self._ids), self._target.peer, self._target.service
        request = OpenRequest(RequestKind.SERVICE, service, protocol=Protocol.UDP)
        stream = None
        try:
            connection = await self._links.get(peer)
            stream, reply_of = await open_tunnel_stream(connection, request)
            reply = await reply_of()
            if not reply.ok:
                raise PeerError(reply.reason)
        except PeerError as exc:
            del self._clients[address]
            if stream is not None:
                stream.forget()
            self._emit(TunnelRefused(Side.FORWARD, tunnel, peer, service, str(exc)))
            return
        flow = client.flow = Flow(connection, stream, self._idle_timeout)
        self._emit(TunnelOpened(Side.FORWARD, tunnel, peer, service, join_host_port(*address)))
        while client.waiting:
            flow.send(client.waiting.popleft())
        try:
            await flow.run(self._to_client(address))
        finally:
            del self._clients[address]
        self._emit(
            TunnelClosed(
                Side.FORWARD, tunnel, peer, service, flow.sent, flow.received, flow.problem
            )
        )

    def _to_client(self, address: ClientAddress) -> Deliver:
        def deliver(payload: bytes) -> None:
            if self._transport is not None:
                self._transport.sendto(payload, address)

        return deliver
