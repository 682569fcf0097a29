"""The peer's one UDP socket: STUN transactions and peer traffic share it, because the NAT
mapping that punching creates belongs to this socket and to no other.

Like aioice, one ``DatagramProtocol`` demultiplexes: datagrams that answer (or are watched
by) our STUN transactions go to the :class:`~iokit.stun_endpoint.StunEndpoint`; everything else
goes to the application's handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from iokit.stun_endpoint import StunEndpoint
from stunproto.attributes import Address

DataHandler = Callable[[bytes, Address], None]


class _Demultiplexer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.stun: StunEndpoint | None = None
        self.on_data: DataHandler | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if self.stun is not None and self.stun.datagram_received(data, source):
            return
        if self.on_data is not None:
            self.on_data(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a peer that is not listening yet is normal while punching.
        pass


class PunchSocket:
    """Owns the peer's UDP socket. ``stun`` runs transactions on it (natprobe accepts it as
    ``endpoint=``); ``on_data`` receives every other datagram."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Demultiplexer) -> None:
        self.transport = transport
        self._protocol = protocol
        self.stun = StunEndpoint(transport)
        protocol.stun = self.stun

    @classmethod
    async def open(cls, local: Address = ("0.0.0.0", 0)) -> PunchSocket:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Demultiplexer, local_addr=local)
        return cls(transport, protocol)

    @property
    def on_data(self) -> DataHandler | None:
        return self._protocol.on_data

    @on_data.setter
    def on_data(self, handler: DataHandler | None) -> None:
        self._protocol.on_data = handler

    @property
    def local_address(self) -> Address:
        return self.stun.local_address

    def sendto(self, data: bytes, destination: Address) -> None:
        self.transport.sendto(data, destination)

    def close(self) -> None:
        self.stun.close()
        self.transport.close()
