"""asyncio adapter: UDP flows through a tunnel, on both sides.

A flow is one client address on the forwarding side and one connected UDP socket toward
the target on the exposing side, tied by a stream: the stream's request and reply open
it, its end closes it, and its id tags the flow's datagrams (peer.tunnel.wire). A flow
that carried nothing for ``idle_timeout`` seconds ends, as a NAT forgets a UDP mapping.
Datagrams ride the channel's unreliable datagrams, as UDP would; one too large for them
goes on the stream instead, so that nothing is cut.

Each connection has one ``DatagramRouter`` reading its datagrams and handing each to its
flow, whichever side opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.adapters.connection import Connection, Stream
from peer.errors import PeerError
from peer.transport.errors import MessageTooLarge
from peer.tunnel.events import EventSink, Side, TunnelClosed, TunnelOpened
from peer.tunnel.policy import Accept, Refusal
from peer.tunnel.specs import join_host_port
from peer.tunnel.wire import (
    LENGTH,
    OpenReply,
    OpenStatus,
    TunnelDecodeError,
    flow_datagram,
    parse_flow_datagram,
)

Deliver = Callable[[bytes], None]
_routers: weakref.WeakKeyDictionary[Connection, DatagramRouter] = weakref.WeakKeyDictionary()


class DatagramRouter:
    """The one reader of a connection's datagrams: each goes to the flow its id names;
    one for no flow (late, or made up) is dropped."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._flows: dict[int, Deliver] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, connection: Connection) -> DatagramRouter:
        router = _routers.get(connection)
        if router is None:
            router = _routers[connection] = cls(connection)
        return router

    def register(self, flow: int, deliver: Deliver) -> None:
        self._flows[flow] = deliver
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def unregister(self, flow: int) -> None:
        self._flows.pop(flow, None)
        if not self._flows and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        with contextlib.suppress(PeerError):
            while True:
                data = await self._connection.recv_datagram()
                try:
                    flow, payload = parse_flow_datagram(data)
                except TunnelDecodeError:
                    continue
                if (deliver := self._flows.get(flow)) is not None:
                    deliver(payload)


@dataclass(slots=True, eq=False)
class Flow:
    """One UDP flow's state on either side."""

    connection: Connection
    stream: Stream
    idle_timeout: float
    last_used: float = 0.0
    sent: int = 0  # toward the peer
    received: int = 0  # from the peer
    problem: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_used = asyncio.get_running_loop().time()

    def send(self, payload: bytes) -> None:
        """Toward the peer: a datagram, or on the stream when too large for one."""
        self.touch()
        self.sent += len(payload)
        try:
            self.connection.send_datagram(flow_datagram(self.stream.stream_id, payload))
        except MessageTooLarge:
            self.stream.write(LENGTH.pack(len(payload)) + payload)
        except PeerError as exc:
            self.problem = str(exc)
            self.ended.set()

    async def run(self, deliver: Deliver) -> None:
        """Until the peer ends the stream, the flow idles out, or the connection ends:
        large datagrams from the stream go to ``deliver``, as the router's do."""
        router = DatagramRouter.of(self.connection)

        def from_router(payload: bytes) -> None:
            self.touch()
            self.received += len(payload)
            deliver(payload)

        router.register(self.stream.stream_id, from_router)
        reading = asyncio.ensure_future(self._read_stream(from_router))
        idle = asyncio.ensure_future(self._idle())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait((reading, idle, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            router.unregister(self.stream.stream_id)
            for task in (reading, idle, ended):
                task.cancel()
            await asyncio.gather(reading, idle, ended, return_exceptions=True)
            with contextlib.suppress(PeerError):
                self.stream.write_eof()  # (the other side ends its flow too)
            self.stream.forget()

    async def _read_stream(self, deliver: Deliver) -> None:
        try:
            while True:
                (size,) = LENGTH.unpack(await self.stream.readexactly(LENGTH.size))
                deliver(await self.stream.readexactly(size))
        except asyncio.IncompleteReadError:
            return  # the peer ended the flow
        except PeerError as exc:
            self.problem = str(exc)

    async def _idle(self) -> None:
        loop = asyncio.get_running_loop()
        self.touch()
        while (left := self.last_used + self.idle_timeout - loop.time()) > 0:
            await asyncio.sleep(left)
        self.problem = self.problem or f"idle for {self.idle_timeout:g} s"


class _TargetSocket(asyncio.DatagramProtocol):
    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.flow.send(data)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for one datagram: UDP carries on, as it would without us


class ExposedFlows:
    """The exposing side's UDP flows of one connection."""

    def __init__(self, connection: Connection, idle_timeout: float) -> None:
        self._connection = connection
        self._idle_timeout = idle_timeout

    async def open(
        self, stream: Stream, accept: Accept, tunnel: int, emit: EventSink
    ) -> Accept | Refusal:
        """Serve the flow to its end (then Accept), or say why it cannot open."""
        loop = asyncio.get_running_loop()
        flow = Flow(self._connection, stream, self._idle_timeout)
        where = join_host_port(accept.host, accept.port)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _TargetSocket(flow), remote_addr=(accept.host, accept.port)
            )
        except OSError as exc:
            return Refusal(OpenStatus.UNREACHABLE, f"{where}: {exc.strerror or exc}")
        peer = self._connection.peer
        try:
            stream.write(OpenReply(OpenStatus.OK).encode())
            emit(TunnelOpened(Side.EXPOSE, tunnel, peer, accept.service, where))
            await flow.run(transport.sendto)
        finally:
            transport.close()
        emit(
            TunnelClosed(
                Side.EXPOSE, tunnel, peer, accept.service, flow.sent, flow.received, flow.problem
            )
        )
        return accept

    def close(self) -> None:
        """(The flows end with the connection's streams.)"""
