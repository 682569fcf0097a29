"""asyncio adapter for :class:`stunproto.client.StunClient` on any datagram transport.

The endpoint does not own the socket's protocol: a peer that multiplexes STUN with its own
traffic on one punching socket calls :meth:`StunEndpoint.datagram_received` from its own
``DatagramProtocol`` and keeps whatever returns False. :func:`open_endpoint` makes a fresh
socket for callers that have none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from iokit.loop_timer import LoopTimer
from stunproto.attributes import Address
from stunproto.client import ResponseReceived, RetransmitPolicy, StunClient
from stunproto.message import MAGIC_COOKIE, StunMessage, is_stun

_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")

UnmatchedHandler = Callable[[bytes, Address], None]


class StunEndpoint:
    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        *,
        policy: RetransmitPolicy | None = None,
        on_unmatched: UnmatchedHandler | None = None,
    ) -> None:
        self.transport = transport
        self.client = StunClient(policy=policy)
        self.on_unmatched = on_unmatched
        self.owns_transport = False  # set by open_endpoint: close() then closes the socket
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[bytes, asyncio.Future[ResponseReceived | None]] = {}
        self._watches: dict[bytes, asyncio.Future[tuple[bytes, Address]]] = {}
        self._timer = LoopTimer(self._on_timer)

    @property
    def local_address(self) -> Address:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def request(
        self,
        request: StunMessage,
        destination: Address,
        *,
        policy: RetransmitPolicy | None = None,
        integrity_key: bytes | None = None,
    ) -> ResponseReceived | None:
        """Run one transaction; None when every retransmission went unanswered."""
        future: asyncio.Future[ResponseReceived | None] = self._loop.create_future()
        tid = self.client.send_request(
            request, destination, self._loop.time(), policy=policy, integrity_key=integrity_key
        )
        self._waiters[tid] = future
        self._pump()
        try:
            return await future
        finally:
            self._waiters.pop(tid, None)
            self.client.cancel(tid)

    def watch(self, transaction_id: bytes) -> asyncio.Future[tuple[bytes, Address]]:
        """A future for the next STUN message with this transaction id arriving on this
        socket although another socket sent the request: a hairpinned request, or a response
        that RESPONSE-PORT steered here. Cancel it when no longer wanted."""
        future: asyncio.Future[tuple[bytes, Address]] = self._loop.create_future()
        self._watches[transaction_id] = future
        future.add_done_callback(lambda _: self._watches.pop(transaction_id, None))
        return future

    def datagram_received(self, data: bytes, addr: Address) -> bool:
        """Feed one datagram; False means it was not ours and the caller may use it."""
        source = (addr[0], addr[1])
        if self._watches and is_stun(data):
            watch = self._watches.get(_transaction_id(data))
            if watch is not None and not watch.done():
                watch.set_result((data, source))
                return True
        consumed = self.client.receive_datagram(data, source, self._loop.time())
        if consumed:
            self._pump()
        elif self.on_unmatched is not None:
            self.on_unmatched(data, source)
        return consumed

    def _on_timer(self) -> None:
        self.client.handle_timer(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        now = self._loop.time()
        for data, destination in self.client.datagrams_to_send(now):
            if not self.transport.is_closing():
                self.transport.sendto(data, destination)
        while (event := self.client.next_event()) is not None:
            waiter = self._waiters.get(event.transaction_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(event if isinstance(event, ResponseReceived) else None)
        self._timer.arm(self.client.get_timer())

    def close(self) -> None:
        self._timer.cancel()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        for watch in list(self._watches.values()):
            watch.cancel()
        if self.owns_transport:
            self.transport.close()


def _transaction_id(data: bytes) -> bytes:
    return data[8:20] if data[4:8] == _COOKIE else data[4:20]


class _EndpointProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.endpoint: StunEndpoint | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.endpoint is not None:
            self.endpoint.datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) must not abort a probe: a missing answer is data.
        pass


async def open_endpoint(
    local: Address = ("0.0.0.0", 0),
    *,
    policy: RetransmitPolicy | None = None,
    on_unmatched: UnmatchedHandler | None = None,
) -> StunEndpoint:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_EndpointProtocol, local_addr=local)
    endpoint = StunEndpoint(transport, policy=policy, on_unmatched=on_unmatched)
    endpoint.owns_transport = True
    protocol.endpoint = endpoint
    return endpoint
