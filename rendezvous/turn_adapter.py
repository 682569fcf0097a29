"""asyncio adapter for the sans-I/O TURN server: owns the relay sockets, drives the timer.

Embedded in the rendezvous, the client-facing socket belongs to the rendezvous server: it
``attach``es its transports and passes TURN datagrams in with ``client_datagram``.
Standalone (tests, or a relay host of its own), ``TurnRelay(config, listen=...)`` binds its
own client-facing socket::

    async with TurnRelay(config, listen=("0.0.0.0", 3478)) as relay:
        ...

Relay sockets are plain non-blocking sockets read through ``loop.add_reader``: they must be
usable at once, in the same callback that handled the Allocate (a Send indication may follow
right behind it), which ``create_datagram_endpoint`` (a coroutine) cannot promise.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from types import TracebackType

import structlog

from rendezvous.turn import Send, TurnConfig, TurnServer
from stunproto.attributes import Address

log = structlog.get_logger()

_READ_BATCH = 64  # datagrams read per wakeup of one relay socket, so that none starves
_MAX_DATAGRAM = 65535

Sender = Callable[[bytes, Address], None]


class _ClientSocket(asyncio.DatagramProtocol):
    def __init__(self, relay: TurnRelay) -> None:
        self._relay = relay
        self._local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Known only once bound (the listen port may be 0).
        sockname = transport.get_extra_info("sockname")
        self._local = (str(sockname[0]), int(sockname[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._relay.client_datagram(data, (str(addr[0]), int(addr[1])), self._local)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from earlier sends (a client went away) are routine


class TurnRelay:
    """Relay sockets and timer around a :class:`TurnServer`."""

    def __init__(
        self,
        config: TurnConfig,
        *,
        listen: Address | None = None,
        server: TurnServer | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server or TurnServer(config)
        self._listen = listen
        self._wall_clock = wall_clock
        self._senders: dict[Address, Sender] = {}  # client-facing local address -> sendto
        self._own: list[asyncio.DatagramTransport] = []
        self._relays: dict[Address, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.local_address: Address | None = None  # the bound listen address, standalone

    # ------------------------------------------------------------------ client side

    def attach(self, local: Address, transport: asyncio.DatagramTransport) -> None:
        """Register a client-facing socket owned by someone else (the rendezvous server):
        answers and relayed data for clients that came in on ``local`` leave through it."""
        self.attach_sender(local, transport.sendto)

    def attach_sender(self, local: Address, sender: Sender) -> None:
        """Like ``attach``, for a client-facing side that is not one UDP socket: answers and
        relayed data for clients known under ``local`` go to ``sender(data, client)``. The
        rendezvous' TCP listener registers one for all its connections, under a ``local``
        of its own (so TCP and UDP clients never share a five-tuple)."""
        self._loop = self._loop or asyncio.get_running_loop()
        self._senders[local] = sender

    def detach(self, local: Address) -> None:
        """Forget the sender for ``local``: what the server still sends there is dropped."""
        self._senders.pop(local, None)

    def client_datagram(self, data: bytes, source: Address, local: Address) -> None:
        """A datagram for the TURN server that arrived on the client-facing socket ``local``
        (the rendezvous calls this for TURN methods and ChannelData, see is_turn_datagram)."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if 0x40 <= data[0] <= 0x7F:
            # ChannelData, the relay's hot path: it authenticates nothing (no wall clock),
            # opens or closes no relay socket and moves no timer, so skip all of that.
            self._send(self.server.handle(data, source, local, loop.time(), 0.0))
            return
        sends = self.server.handle(data, source, local, loop.time(), self._wall_clock())
        self._sync_relays(loop)
        self._send(sends)
        self._rearm(loop)

    # ------------------------------------------------------------------ relay side

    def _sync_relays(self, loop: asyncio.AbstractEventLoop) -> None:
        # Close first: a port the server freed may be handed out again.
        for relay in self.server.relays_to_close():
            sock = self._relays.pop(relay, None)
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        for relay in self.server.relays_to_open():
            family = socket.AF_INET6 if ":" in relay[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(relay)
            except OSError as exc:
                sock.close()
                log.warning(
                    "turn_relay_bind_failed", relay=f"{relay[0]}:{relay[1]}", error=str(exc)
                )
                self.server.relay_failed(relay, loop.time())
                continue
            self._relays[relay] = sock
            loop.add_reader(sock.fileno(), self._readable, relay, sock)

    def _readable(self, relay: Address, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. a queued ICMP error; the next wakeup reads on
            peer = (str(addr[0]), int(addr[1]))
            self._send(self.server.handle_relayed(relay, data, peer, now))
        self._rearm(loop)

    def _send(self, sends: list[Send]) -> None:
        for send in sends:
            sender = self._senders.get(send.from_socket)
            if sender is not None:
                sender(send.data, send.destination)
                continue
            sock = self._relays.get(send.from_socket)
            if sock is None:
                continue
            # A full buffer or an unreachable peer: UDP is lossy, the sender retries. (A bare
            # try costs less than contextlib.suppress on this per-datagram path.)
            try:  # noqa: SIM105
                sock.sendto(send.data, send.destination)
            except OSError:
                pass

    # ------------------------------------------------------------------ timer

    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        at = self.server.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = None if at is None else loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = self._timer_at = None
        self.server.handle_timer(loop.time())
        self._sync_relays(loop)
        self._rearm(loop)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._listen is None:
            return
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _ClientSocket(self), local_addr=self._listen
        )
        datagram = transport
        sockname = datagram.get_extra_info("sockname")
        self.local_address = (str(sockname[0]), int(sockname[1]))
        self._own.append(datagram)
        self._senders[self.local_address] = datagram.sendto
        log.info("turn_listening", address=f"{sockname[0]}:{sockname[1]}")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        for sock in self._relays.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._relays.clear()
        for transport in self._own:
            transport.close()
        self._own.clear()
        self._senders.clear()

    async def __aenter__(self) -> TurnRelay:
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
