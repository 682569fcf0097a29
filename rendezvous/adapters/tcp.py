"""STUN, rendezvous and TURN over TCP, for networks that block UDP (offices, some hotels).

The rendezvous listens on TCP at the IP and port of its primary UDP socket. Each connection
is one client; its byte stream is cut into messages by :mod:`stunproto.framing` (RFC 8489
section 6.2.2, RFC 8656 section 12.5), and each message goes to the core as the same
datagram would over UDP, with the route ``TcpConnection(primary)``: the per-source rate
limit, the answer caches, the registration (whose endpoint becomes the TCP source) and TURN
allocations work unchanged, and the route keeps a TCP client apart from a UDP client that
happens to have the same address and port. What the core sends by that route (answers,
introductions to a peer that logged in over TCP, relayed data for a TURN client) is written
to the connection from the transmit's destination. Relaying to peers stays UDP.

Bounds: at most ``max_connections`` (and ``max_connections_per_ip``) connections; one
that completed no message for ``idle_timeout`` seconds (its first one within
``first_message_timeout``; ``anonymous_idle_timeout`` while its client is neither logged in
nor relaying) is closed, and when all slots are taken a newcomer displaces the oldest
connection of such an anonymous client (logged-in peers keep theirs); a client that does not
read loses messages once ``max_write_buffer`` bytes wait for it, as it would lose datagrams
over UDP, instead of making the server buffer without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from rendezvous.core import RendezvousCore
from rendezvous.errors import ConfigError
from rendezvous.routes import TcpConnection, address_text
from stunproto.attributes import Address
from stunproto.framing import FramingError, StreamDecoder, frame

log = structlog.get_logger()


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpConfig:
    max_connections: int = 1000
    # Generous: UDP-blocking networks are offices, where many peers share one public IP.
    max_connections_per_ip: int = 100
    # Seconds without one whole message before a connection is closed. A logged-in peer
    # refreshes its registration every ~20 s; a TURN client refreshes its allocation a
    # minute before its lifetime (600 s by default) runs out, so 600 s keeps both.
    idle_timeout: float = 600.0
    # A connection that has not completed its first message by then is closed: holding
    # slots with silent connections should cost more than one idle_timeout per slot.
    first_message_timeout: float = 30.0
    # A connection that is neither logged in nor holding a relay allocation (a Binding
    # and silence, say) is closed after this long without a message: slots are for peers.
    anonymous_idle_timeout: float = 30.0
    max_write_buffer: int = 256 * 1024  # bytes queued for one client before we drop

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_connections_per_ip) < 1:
            raise ConfigError("connection limits must be at least 1")
        timeouts = (self.idle_timeout, self.first_message_timeout, self.anonymous_idle_timeout)
        if min(timeouts) <= 0 or self.max_write_buffer < 1:
            raise ConfigError("timeouts and max_write_buffer must be positive")


class _Connection(asyncio.Protocol):
    def __init__(self, listener: TcpListener) -> None:
        self._listener = listener
        self._decoder = StreamDecoder()
        self._transport: asyncio.Transport | None = None
        self.source: Address = ("", 0)
        self._loop = asyncio.get_running_loop()
        self._last_heard: float | None = None  # when the last whole message came in
        self._opened = self._loop.time()
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.source = (str(peer[0]), int(peer[1]))  # IPv6 peernames have 4 fields
        if not self._listener.admit(self):
            self._transport.abort()
            return
        config = self._listener.config
        self._idle = self._loop.call_at(
            self._opened + config.first_message_timeout, self._check_idle
        )

    def data_received(self, data: bytes) -> None:
        broken: FramingError | None = None
        try:
            messages = self._decoder.feed(data)
        except FramingError as exc:
            broken, messages = exc, exc.messages
        if messages:
            first = self._last_heard is None
            self._last_heard = self._loop.time()
            self._listener.dispatch(messages, self.source)
            if first and self._idle is not None:  # (from the first-message deadline on)
                self._idle.cancel()
                self._idle = self._loop.call_at(self._due(), self._check_idle)
        if broken is not None and self._transport is not None:
            # Answer what came before the garbage, then give up (close, not abort: those
            # answers are still to be flushed): nothing says where the next message starts.
            log.debug("tcp_framing_error", source=address_text(self.source), error=str(broken))
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._listener.forget(self)

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self._listener.config.max_write_buffer:
            self._listener.dropped += 1
            return
        transport.write(frame(data))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _due(self) -> float:
        """When this connection is closed unless a message comes first."""
        config = self._listener.config
        if self._last_heard is None:
            return self._opened + config.first_message_timeout
        if self._listener.serves(self):
            return self._last_heard + config.idle_timeout
        return self._last_heard + min(config.anonymous_idle_timeout, config.idle_timeout)

    def _check_idle(self) -> None:
        # One timer per connection, moved only when it fires: cheaper than re-arming it for
        # every message.
        due = self._due()
        if self._loop.time() >= due:
            self._idle = None
            log.debug("tcp_idle_close", source=address_text(self.source))
            self.abort()
        else:
            self._idle = self._loop.call_at(due, self._check_idle)


class TcpListener:
    """The rendezvous's TCP side: ``await start()``, ``close()``.

    ``primary`` is the address requests are attributed to (the primary address, as the
    core knows it); ``bind`` where to listen (the same, but with the port the primary
    UDP socket actually got, should it have been configured as 0). ``flush`` sends what the
    core queued; it runs after each chunk of messages."""

    def __init__(
        self,
        core: RendezvousCore,
        primary: Address,
        *,
        flush: Callable[[], None],
        config: TcpConfig | None = None,
        bind: Address | None = None,
    ) -> None:
        self._core = core
        self.via = TcpConnection(primary)
        self.config = config or TcpConfig()
        self._flush = flush
        self._bind = bind or primary
        self._server: asyncio.Server | None = None
        self._connections: dict[Address, _Connection] = {}
        self._per_ip: dict[str, int] = {}
        self.refused = 0  # connections turned away by the limits
        self.dropped = 0  # messages not written to clients that do not read
        self.address: Address | None = None  # where we listen, once started

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self._bind[0], self._bind[1]
        )
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info(
            "tcp_listening",
            address=address_text(self.address),
            max_connections=self.config.max_connections,
            relay=self._core.turn is not None,
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.close()  # stops listening; connections are closed below
            self._server = None
        for connection in list(self._connections.values()):
            connection.abort()
        self._connections.clear()
        self._per_ip.clear()

    # ------------------------------------------------------------------ connections

    def serves(self, connection: _Connection) -> bool:
        """Is that connection's client logged in, or holding a relay allocation?"""
        return self._core.serves(connection.source, self.via, asyncio.get_running_loop().time())

    def _evict_anonymous(self) -> bool:
        """Full: close the longest-open connection whose client is neither logged in nor
        relaying, so that a newcomer (who may log in) gets its slot; False if every slot
        holds a peer (the reserved case: they keep theirs)."""
        for connection in self._connections.values():  # (oldest first)
            if not self.serves(connection):
                log.debug("tcp_evicted", source=address_text(connection.source))
                connection.abort()
                self.forget(connection)
                return True
        return False

    def admit(self, connection: _Connection) -> bool:
        ip = connection.source[0]
        if len(self._connections) >= self.config.max_connections:
            self._evict_anonymous()
        if (
            len(self._connections) >= self.config.max_connections
            or self._per_ip.get(ip, 0) >= self.config.max_connections_per_ip
            or connection.source in self._connections
        ):
            self.refused += 1
            log.debug("tcp_refused", source=address_text(connection.source))
            return False
        self._connections[connection.source] = connection
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return True

    def forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.source) is not connection:
            return  # refused at connection_made, or already closed by close()
        del self._connections[connection.source]
        ip = connection.source[0]
        left = self._per_ip.pop(ip, 1) - 1
        if left > 0:
            self._per_ip[ip] = left

    # ------------------------------------------------------------------ messages

    def dispatch(self, messages: list[bytes], source: Address) -> None:
        """Whole messages from the connection at ``source``: to the core, as over UDP."""
        now = asyncio.get_running_loop().time()
        for message in messages:
            self._core.receive_datagram(message, source, self.via, now)
        self._flush()

    def send(self, data: bytes, destination: Address) -> None:
        """Write a message to the client connected from ``destination``; a client gone
        since is like a lost datagram."""
        connection = self._connections.get(destination)
        if connection is not None:
            connection.write(data)
