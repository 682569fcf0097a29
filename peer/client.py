"""asyncio adapter: ``Peer`` and ``Connection``, the library API on top of PeerAgent.

    async with Peer(server, identity=identity, name="alice") as me:
        conn = await me.connect("bob")
        await conn.send(b"hi")
        async for data in conn:
            ...

Only this module (and the CLI) touches sockets and the clock: the agent under it is
sans-I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

import structlog

from iokit.loop_timer import LoopTimer
from natprobe.probe import ProbeConfig, probe, route_local_ip
from peer.agent import AgentConfig, PeerAgent
from peer.birthday import split_socket, via_socket
from peer.events import (
    AgentEvent,
    Allocated,
    AllocationFailed,
    Connected,
    ConnectFailed,
    Introduced,
    LoggedIn,
    LoginFailed,
    MessageReceived,
    PathChanged,
    PathKind,
    SessionClosed,
)
from peer.identity import Identity
from peer.known_peers import KnownPeers
from peer.localaddr import local_endpoints
from peer.rendezvous_client import RendezvousClientConfig
from peer.session import SessionConfig
from peer.socket import PunchSocket
from stunproto.attributes import Address
from stunproto.framing import FramingError, StreamDecoder, frame

log = structlog.get_logger()


class PeerError(Exception):
    """Login refused, peer unknown, punching failed, or the connection closed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    local_port: int = 0
    probe_nat: bool = True  # classify the NAT on the punching socket before logging in
    probe_lifetime: float | None = None  # also measure the binding lifetime (seconds max)
    # None: half the measured binding lifetime, else 15 s; 0 turns keepalives off
    keepalive: float | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    login_timeout: float = 15.0
    # "auto": UDP, falling back to TCP (and the relay) when UDP gets no answer; or force one.
    transport: str = "auto"
    relay_timeout: float = 5.0  # how long to wait for the relay allocation after login


class Connection:
    """A secure channel to one peer. Iterate it for messages; ``send`` is reliable and
    ordered."""

    def __init__(self, owner: Peer, event: Connected) -> None:
        self._owner = owner
        self.peer = event.peer
        self.path: PathKind = event.path
        self.remote: Address = event.remote
        self.connect_time = event.elapsed
        self.note = event.note
        self._messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed: str | None = None  # the reason, once closed

    async def send(self, data: bytes) -> None:
        if self.closed is not None:
            raise PeerError(f"connection to {self.peer} closed: {self.closed}")
        self._owner._agent_send(self.peer, data)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the peer has acknowledged everything sent so far."""
        await asyncio.wait_for(self._owner._until_acked(self.peer), timeout)

    async def close(self) -> None:
        self._owner._agent_close(self.peer)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._messages.get()
            if item is None:
                return
            yield item


class Peer:
    def __init__(
        self,
        server: Address,
        *,
        identity: Identity,
        name: str,
        known_peers: KnownPeers | Path | None = None,
        config: PeerConfig | None = None,
    ) -> None:
        self.server = server
        self.identity = identity
        self.name = name
        self.config = config or PeerConfig()
        self._known = KnownPeers(known_peers) if isinstance(known_peers, Path) else known_peers
        # Everything that happens, for observers; bounded, the oldest dropped when full.
        self.events: asyncio.Queue[AgentEvent] = asyncio.Queue(maxsize=1024)
        self.nat_type = "unknown"
        self.binding_lifetime: float | None = None
        self.public_endpoint: Address | None = None
        self._punch: PunchSocket | None = None
        self._agent: PeerAgent | None = None
        self._timer = LoopTimer(self._on_timer)
        self._connections: dict[str, Connection] = {}
        self._accepted: asyncio.Queue[Connection] = asyncio.Queue()
        self._waiters: dict[str, asyncio.Future[Connection]] = {}
        self._logged_in: asyncio.Future[None] | None = None
        self._relay_ready: asyncio.Future[None] | None = None
        self._progress = asyncio.Event()
        self.transport = "udp"  # how we reach the rendezvous: "udp", or "tcp" if UDP is blocked
        self._tcp: asyncio.StreamWriter | None = None
        self._tcp_reader: asyncio.Future[None] | None = None
        self._extra: dict[int, socket.socket] = {}  # birthday-trick sockets, by index

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Peer:
        try:
            await self.start()
        except BaseException:
            await self.aclose()  # the socket, a TCP connection, timers: nothing leaks
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        local_ip = route_local_ip(self.server)
        self._punch = await PunchSocket.open(("0.0.0.0", self.config.local_port))
        port = self._punch.local_address[1]
        if self.config.probe_nat:
            report = await probe(
                self.server,
                config=ProbeConfig(
                    local_ip=local_ip, hairpin=False, lifetime_max=self.config.probe_lifetime
                ),
                endpoint=self._punch.stun,
            )
            self.nat_type = str(report.nat_type)
            self.binding_lifetime = report.binding_lifetime
        # No UDP to the rendezvous at all (offices, hotels): log in over TCP and send
        # everything through the relay, over that same connection.
        over_tcp = self.config.transport == "tcp" or (
            self.config.transport == "auto" and self.nat_type == "udp-blocked"
        )
        try:
            await self._log_in(local_ip, port, over_tcp=over_tcp)
        except PeerError:
            if over_tcp or self.config.transport != "auto":
                raise
            log.info("udp_login_failed_trying_tcp", server=f"{self.server[0]}:{self.server[1]}")
            await self._log_in(local_ip, port, over_tcp=True)

    async def _log_in(self, local_ip: str, port: int, *, over_tcp: bool) -> None:
        assert self._punch is not None
        session = self.config.session
        keepalive = self.config.keepalive
        if keepalive is None and self.binding_lifetime is not None:
            keepalive = max(1.0, self.binding_lifetime / 2)
        if keepalive is not None:
            session = _with_keepalive(session, keepalive)
        agent_config = AgentConfig(
            rendezvous=RendezvousClientConfig(
                server=self.server,
                name=self.name,
                public_key=self.identity.public_key,
                private_endpoints=local_endpoints(port, local_ip),
                nat_type=self.nat_type,
                refresh_interval=min(keepalive, 20.0) if keepalive else None,
            ),
            session=session,
            relay_only=over_tcp,
        )
        self._agent = PeerAgent(
            agent_config,
            sign=self.identity.sign,
            static=self.identity.x25519_private,
            known_peers=self._known,
            rng=random.Random(),
        )
        self._punch.on_data = self._datagram
        if over_tcp:
            await self._open_tcp()
        loop = asyncio.get_running_loop()
        self._logged_in = loop.create_future()
        self._relay_ready = loop.create_future()
        self._agent.login(loop.time())
        self._pump()
        timeout = self.config.login_timeout
        try:
            await asyncio.wait_for(self._logged_in, timeout)
        except TimeoutError as exc:
            raise PeerError(f"login failed: no answer within {timeout:.0f} s") from exc
        self.transport = "tcp" if over_tcp else "udp"
        if self._agent.turn is not None:
            # Offered a relay: be ready to use it before anyone is introduced to us (the
            # introduction carries our relayed endpoint only once the server knows it).
            assert self._relay_ready is not None
            try:
                await asyncio.wait_for(self._relay_ready, self.config.relay_timeout)
            except TimeoutError:
                log.warning("relay_unavailable", reason="no allocation in time")

    async def _open_tcp(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*self.server), self.config.login_timeout
        )
        self._tcp = writer
        decoder = StreamDecoder()

        async def read() -> None:
            try:
                while chunk := await reader.read(65536):
                    for message in decoder.feed(chunk):
                        self._datagram(message, self.server)
            except (OSError, FramingError) as exc:
                log.warning("tcp_connection_lost", reason=str(exc))
            if self._logged_in is not None and not self._logged_in.done():
                self._logged_in.set_exception(PeerError("the server closed the TCP connection"))

        self._tcp_reader = asyncio.ensure_future(read())

    async def aclose(self) -> None:
        if self._agent is not None:
            for name in list(self._agent.sessions):
                self._agent_close(name)
        self._timer.cancel()
        if self._tcp_reader is not None:
            self._tcp_reader.cancel()
        if self._tcp is not None:
            self._tcp.close()
        loop = asyncio.get_running_loop()
        for sock in self._extra.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._extra.clear()
        if self._punch is not None:
            self._punch.close()

    # ------------------------------------------------------------------ API

    async def connect(self, name: str, timeout: float = 30.0) -> Connection:
        assert self._agent is not None, "use 'async with Peer(...)'"
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection] = loop.create_future()
        self._waiters[name] = waiter
        self._agent.connect(name, loop.time())
        self._pump()
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(name, None)

    async def accept(self) -> Connection:
        """The next connection a peer made to us (we were introduced as responder)."""
        return await self._accepted.get()

    # ------------------------------------------------------------------ plumbing

    def _agent_send(self, name: str, data: bytes) -> None:
        assert self._agent is not None
        self._agent.send(name, data, asyncio.get_running_loop().time())
        self._pump()

    def _agent_close(self, name: str) -> None:
        assert self._agent is not None
        self._agent.close(name, asyncio.get_running_loop().time())
        self._pump()

    async def _until_acked(self, name: str) -> None:
        assert self._agent is not None
        while (session := self._agent.sessions.get(name)) is not None and session.pending:
            self._progress.clear()
            await self._progress.wait()
        if session is None and name not in self._connections:
            # Closed before everything was acknowledged: say so rather than pretend.
            raise PeerError(f"the connection closed before {name} acknowledged everything")

    def _datagram(self, data: bytes, source: Address) -> None:
        assert self._agent is not None
        self._agent.receive_datagram(data, source, asyncio.get_running_loop().time())
        self._pump()

    def _on_timer(self) -> None:
        assert self._agent is not None
        self._agent.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    def _pump(self) -> None:
        agent, punch = self._agent, self._punch
        assert agent is not None and punch is not None
        loop = asyncio.get_running_loop()
        for data, destination in agent.datagrams_to_send(loop.time()):
            index, real = split_socket(destination)
            if index is not None:
                self._send_from_extra(index, data, real)
            elif self._tcp is not None and destination == self.server:
                self._tcp.write(frame(data))
            else:
                punch.sendto(data, destination)
        while (event := agent.next_event()) is not None:
            self._dispatch(event)
        self._progress.set()
        self._timer.arm(agent.get_timer())

    def _send_from_extra(self, index: int, data: bytes, destination: Address) -> None:
        """The birthday trick's extra sockets (peer.birthday): plain non-blocking sockets,
        opened on first use, each a fresh mapping at a symmetric NAT."""
        sock = self._extra.get(index)
        if sock is None:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError:
                return  # out of descriptors: fewer sockets, smaller odds, nothing worse
            try:
                sock.setblocking(False)
                sock.bind(("0.0.0.0", 0))
                asyncio.get_running_loop().add_reader(sock.fileno(), self._read_extra, index, sock)
            except OSError:
                sock.close()
                return
            self._extra[index] = sock
        # A full buffer or an ICMP error: punching is lossy by nature.
        with contextlib.suppress(OSError):
            sock.sendto(data, destination)

    def _read_extra(self, index: int, sock: socket.socket) -> None:
        assert self._agent is not None
        now = asyncio.get_running_loop().time()
        for _ in range(64):
            try:
                data, source = sock.recvfrom(65535)
            except OSError:  # nothing more to read, or an ICMP error report
                break
            self._agent.receive_datagram(data, via_socket(index, (source[0], source[1])), now)
        self._pump()

    def _dispatch(self, event: AgentEvent) -> None:
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)
        if isinstance(event, LoggedIn):
            self.public_endpoint = event.public_endpoint
            if self._logged_in is not None and not self._logged_in.done():
                self._logged_in.set_result(None)
        elif isinstance(event, LoginFailed):
            log.warning("login_failed", reason=event.reason, code=event.code)
            if self._logged_in is not None and not self._logged_in.done():
                self._logged_in.set_exception(PeerError(f"login failed: {event.reason}"))
        elif isinstance(event, Allocated | AllocationFailed):
            if isinstance(event, AllocationFailed):
                log.warning("relay_allocation_failed", reason=event.reason, code=event.code)
            if self._relay_ready is not None and not self._relay_ready.done():
                self._relay_ready.set_result(None)
        elif isinstance(event, ConnectFailed):
            self._fail(event.name, f"cannot connect to {event.name}: {event.reason}")
        elif isinstance(event, Introduced):
            log.info("introduced", peer=event.introduction.name, role=event.introduction.role.name)
        elif isinstance(event, Connected):
            connection = Connection(self, event)
            self._connections[event.peer] = connection
            waiter = self._waiters.get(event.peer)
            if waiter is not None and not waiter.done():
                waiter.set_result(connection)
            else:
                self._accepted.put_nowait(connection)
        elif isinstance(event, MessageReceived):
            receiver = self._connections.get(event.peer)
            if receiver is not None:
                receiver._messages.put_nowait(event.data)
        elif isinstance(event, PathChanged):
            moved = self._connections.get(event.peer)
            if moved is not None:
                moved.path, moved.remote = event.path, event.remote
        elif isinstance(event, SessionClosed):
            assert self._agent is not None
            if event.peer not in self._agent.sessions:
                # Not when a newer session replaced this one (both sides connecting at once,
                # or a reconnect): the caller waits for that one.
                self._fail(event.peer, event.reason)
            ended = self._connections.pop(event.peer, None)
            if ended is not None:
                ended.closed = event.reason
                ended._messages.put_nowait(None)

    def _fail(self, name: str, reason: str) -> None:
        waiter = self._waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_exception(PeerError(reason))


def _with_keepalive(session: SessionConfig, keepalive: float) -> SessionConfig:
    if keepalive <= 0:
        # No keepalives, so silence proves nothing: no dead-path detection either.
        return replace(session, keepalive_interval=None, dead_after=math.inf)
    # A path is dead after several keepalives went unanswered, never sooner than 5 s.
    return replace(session, keepalive_interval=keepalive, dead_after=max(5.0, 4 * keepalive))
