"""asyncio adapter: binds the service's UDP sockets and moves datagrams in and out."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from types import TracebackType
from typing import cast

import structlog

from iokit.loop_timer import LoopTimer
from rendezvous.registry import NameRegistry
from rendezvous.service import RendezvousConfig, RendezvousService
from rendezvous.stun_service import Reply, StunServiceConfig
from rendezvous.tcp import TcpConfig, TcpListener
from rendezvous.turn import TurnConfig, is_turn_datagram
from rendezvous.turn_adapter import TurnRelay
from stunproto.attributes import Address

log = structlog.get_logger()


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, server: RendezvousServer, local: Address) -> None:
        self._server = server
        self._local = local
        self._turn = server.turn
        self._respond = server.service.stun.responder(local, fallback=server.service.handle)
        self._time = asyncio.get_running_loop().time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sendto = cast(asyncio.DatagramTransport, transport).sendto

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        # TURN methods and ChannelData go to the embedded relay (a plain Binding request
        # fails this test on its first bytes, so the fast path below stays fast).
        if self._turn is not None and is_turn_datagram(data):
            self._turn.client_datagram(data, addr, self._local)  # type: ignore[arg-type]
            return
        # Hot path: one call into the sans-I/O service, one send. A plain Binding answer
        # comes back as bytes for the sender, anything else as a Reply.
        reply = self._respond(data, addr, self._time())  # type: ignore[arg-type]
        if reply is None:
            return
        if reply.__class__ is bytes:
            self._sendto(reply, addr)
        else:
            assert isinstance(reply, Reply)
            self._server.send(reply)
            # Rendezvous requests may have started server transactions (introductions).
            self._server.pump()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends (a client went away) are routine for a UDP server.
        pass


class RendezvousServer:
    """``async with RendezvousServer(config) as server:`` serves until the block exits.

    A bare ``StunServiceConfig`` serves with default rendezvous settings and an in-memory
    name registry. The primary address also listens on TCP (``rendezvous.tcp``) for
    networks that block UDP; ``tcp=None`` turns that off."""

    def __init__(
        self,
        config: RendezvousConfig | StunServiceConfig,
        registry: NameRegistry | None = None,
        *,
        turn: TurnConfig | None = None,
        tcp: TcpConfig | None = TcpConfig(),  # noqa: B008 (frozen, so sharing it is safe)
    ) -> None:
        if isinstance(config, StunServiceConfig):
            config = RendezvousConfig(stun=config)
        if turn is not None and config.turn_secret is None:
            # The embedded relay and the credentials we issue share one secret.
            config = replace(config, turn_secret=turn.shared_secret)
        self.service = RendezvousService(
            config, registry or NameRegistry(), wall_offset=time.time() - time.monotonic()
        )
        self.turn = TurnRelay(turn) if turn is not None else None
        self.transports: dict[Address, asyncio.DatagramTransport] = {}
        self._tcp_config = tcp
        self.tcp: TcpListener | None = None
        self._timer = LoopTimer(self._on_timer)

    def send(self, reply: Reply) -> None:
        transport = self.transports.get(reply.local)
        if transport is not None:
            transport.sendto(reply.data, reply.destination)

    def pump(self) -> None:
        """Send what the service queued and re-arm its timer."""
        loop = asyncio.get_running_loop()
        for reply in self.service.datagrams_to_send(loop.time()):
            # An introduction for a peer that logged in over TCP goes on its connection.
            # (Only here: answers to UDP requests go back over UDP, even should a TCP
            # client have the same address and port.)
            if self.tcp is None or not self.tcp.send(reply.data, reply.destination):
                self.send(reply)
        self._timer.arm(self.service.get_timer())

    def _on_timer(self) -> None:
        self.service.handle_timer(asyncio.get_running_loop().time())
        self.pump()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for local in self.service.local_addresses:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda local=local: _Socket(self, local),  # type: ignore[misc]
                    local_addr=local,
                )
                self.transports[local] = transport
            if self.turn is not None:
                await self.turn.start()
                for local, transport in self.transports.items():
                    self.turn.attach(local, transport)
            if self._tcp_config is not None:
                await self._start_tcp()
        except BaseException:
            self.close()
            raise
        log.info(
            "listening",
            addresses=[f"{ip}:{port}" for ip, port in self.service.local_addresses],
            rfc5780=self.service.stun.has_alternate,
            relay=self.turn is not None,
        )

    async def _start_tcp(self) -> None:
        primary = self.service.config.stun.primary
        # Same port as the primary UDP socket, also when that was configured as 0.
        sockname = self.transports[primary].get_extra_info("sockname")
        self.tcp = TcpListener(
            self.service,
            primary,
            turn=self.turn,
            after_request=self.pump,
            config=self._tcp_config,
            bind=(primary[0], int(sockname[1])),
        )
        await self.tcp.start()

    def close(self) -> None:
        self._timer.cancel()
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        if self.turn is not None:
            self.turn.close()
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()

    async def __aenter__(self) -> RendezvousServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
