"""asyncio adapter: ``Peer``, the library API on top of PeerAgent, and the
:class:`~peer.adapters.connection.Connection` objects it hands out::

    async with Peer(server, identity=identity, name="alice") as me:
        conn = await me.connect("bob")
        await conn.send(b"hi")

The agent under it is sans-I/O; start-up decisions (transport, keepalives) are peer.startup's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import structlog

from iokit.lifecycle import AsyncLifecycle
from iokit.loop_timer import LoopTimer
from iokit.udp_sockets import UdpSockets
from natprobe.report import NatType
from peer.adapters.accept_queue import AcceptQueue, ConnectionRefused, PendingConnects, Screen
from peer.adapters.connection import Connection
from peer.adapters.punch_socket import PunchSocket
from peer.adapters.reach import probe_nat, resolve_server, within
from peer.adapters.server_tcp import ServerConnection
from peer.adapters.tunnels import TunnelsMixin
from peer.agent import AgentConfig, PeerAgent
from peer.errors import LocalProtocolError, PeerError
from peer.events import (
    AgentEvent,
    Allocated,
    AllocationFailed,
    ChannelEvent,
    Connected,
    ConnectFailed,
    Introduced,
    LoggedIn,
    LoginFailed,
    MessageReceived,
    Offline,
    Online,
    PathChanged,
    SessionClosed,
)
from peer.identity import Identity
from peer.known_peers import KnownPeers
from peer.localaddr import local_endpoints
from peer.rendezvous_client import RendezvousClientConfig
from peer.routes import DIRECT, TCP, ExtraSocket, OverTcp, Via
from peer.startup import (
    LoginAttempt,
    LoginPhase,
    PeerConfig,
    Transport,
    fallback_transport,
    first_transport,
    plan_keepalives,
    start_failure,
)
from rvproto.names import InvalidName, canonical_name
from stunproto.attributes import Address

log = structlog.get_logger()

__all__ = ["Connection", "ConnectionRefused", "Peer", "PeerConfig", "PeerError", "Transport"]


class Peer(TunnelsMixin, AsyncLifecycle):
    """One peer online at the rendezvous: ``async with`` logs in (see peer.startup for how),
    ``connect`` and ``accept`` give connections, ``expose`` and ``forward`` tunnels
    (peer.adapters.tunnels); ``events`` carries everything else."""

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
        self.nat_type = NatType.UNKNOWN
        self.binding_lifetime: float | None = None
        self.public_endpoint: Address | None = None
        self._punch: PunchSocket | None = None
        self._agent: PeerAgent | None = None
        self._timer = LoopTimer(self._on_timer)
        self._connections: dict[str, Connection] = {}
        self._pump_soon = False
        self._incoming = AcceptQueue(self.config.accept_backlog)  # until accept() takes them
        self._pending = PendingConnects()  # ours, until the peer takes them
        self._attempt: LoginAttempt | None = None  # the login under way, or the last one
        self._progress = asyncio.Event()
        # How we reach the rendezvous: UDP, or TCP if UDP is blocked.
        self.transport = Transport.UDP
        self._tcp: ServerConnection | None = None
        # The birthday trick's extra sockets (peer.birthday), by route, opened on first use.
        self._extra: UdpSockets[ExtraSocket] = UdpSockets(
            self._read_extra, after_batch=self._after_extra_batch
        )

    # ------------------------------------------------------------------ lifecycle
    # ``async with`` (AsyncLifecycle) closes on the way out, and after a failed start: the
    # socket, a TCP connection, timers: nothing leaks.

    async def start(self) -> None:
        self.server, local_ip = await resolve_server(self.server)  # (answers come from it)
        self._punch = await PunchSocket.open(("0.0.0.0", self.config.local_port))
        port = self._punch.local_address[1]
        if self.config.probe_nat:
            report = await probe_nat(self.server, local_ip, self.config, self._punch)
            self.nat_type, self.binding_lifetime = report.nat_type, report.binding_lifetime
        transport = first_transport(self.config.transport, self.nat_type)
        while True:
            try:
                await self._log_in(local_ip, port, transport)
                return
            except PeerError as exc:
                fallback = fallback_transport(self.config.transport, transport)
                if fallback is None:
                    raise start_failure(self.server, self._attempt, exc) from None
                log.info(
                    "login_failed_trying_fallback",
                    transport=str(transport),
                    fallback=str(fallback),
                    server=f"{self.server[0]}:{self.server[1]}",
                )
                transport = fallback

    async def _log_in(self, local_ip: str, port: int, transport: Transport) -> None:
        assert self._punch is not None
        over_tcp = transport is Transport.TCP
        plan = plan_keepalives(
            self.config.session,
            keepalive=self.config.keepalive,
            binding_lifetime=self.binding_lifetime,
        )
        agent_config = AgentConfig(
            rendezvous=RendezvousClientConfig(
                server=self.server,
                name=self.name,
                public_key=self.identity.public_key,
                private_endpoints=local_endpoints(port, local_ip),
                nat_type=self.nat_type,
                refresh_interval=plan.refresh_interval,
                server_key=self.config.server_key or self._pinned_server_key(),
            ),
            session=plan.session,
            relay_only=over_tcp,
            over_tcp=over_tcp,
        )
        self._agent = PeerAgent(
            agent_config,
            static=self.identity.x25519_private,
            known_peers=self._known,
            rng=random.Random(),
        )
        self._punch.on_data = self._datagram
        if over_tcp:
            await self._open_tcp()
        loop = asyncio.get_running_loop()
        attempt = self._attempt = LoginAttempt(
            transport,
            loop.time(),
            login_timeout=self.config.login_timeout,
            relay_timeout=self.config.relay_timeout,
        )
        self._agent.login(loop.time())
        self._pump()
        await self._until_settled(attempt)
        if attempt.phase is LoginPhase.FAILED:
            raise PeerError(attempt.failure)
        self.transport = attempt.transport
        if attempt.relay_missing:
            log.warning("relay_unavailable", reason="no allocation in time")

    def _pinned_server_key(self) -> bytes | None:
        server = f"{self.server[0]}:{self.server[1]}"  # (pinned by the agent at login)
        return self._known.server_key(server) if self._known is not None else None

    async def _until_settled(self, attempt: LoginAttempt) -> None:
        """Wake on every pump (the agent's events feed ``attempt`` in ``_dispatch``) and at
        the attempt's deadline, until it is ready or failed."""
        loop = asyncio.get_running_loop()
        while (deadline := attempt.get_timer()) is not None:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), max(0.0, deadline - loop.time()))
            attempt.handle_timer(loop.time())

    async def _open_tcp(self) -> None:
        self._tcp = ServerConnection(
            self.server,
            timeout=self.config.login_timeout,
            on_datagram=lambda data: self._datagram(data, self.server, TCP),
            on_lost=self._tcp_lost,
            wanted=lambda: self._agent is not None and self._agent.wants_server_connection,
            on_reopened=self._pump,
        )
        await self._tcp.open()

    def _tcp_lost(self, reason: str) -> None:
        if self._attempt is not None and self._attempt.phase is LoginPhase.LOGGING_IN:
            self._attempt.connection_lost()  # the first login: start-up decides
            self._progress.set()
        elif self._agent is not None and self._punch is not None:
            # Later: the agent schedules another login, which reopens the connection.
            self._agent.connection_lost(reason, asyncio.get_running_loop().time())
            self._pump()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._incoming.close("the peer is closed")
        if self._agent is not None:
            for name in list(self._agent.sessions):
                self._agent_close(name)
        self._timer.cancel()
        if self._tcp is not None:
            self._tcp.close()
        self._extra.close_all()
        if self._punch is not None:
            self._punch.close()

    # ------------------------------------------------------------------ API

    async def connect(self, name: str, timeout: float = 30.0) -> Connection:
        """A connection ``name`` has taken (it answered on the channel); raises
        ConnectionRefused when it closed it instead (busy, its backlog full)."""
        if self._agent is None:
            raise LocalProtocolError("connect before start: use 'async with Peer(...)'")
        try:
            name = canonical_name(name)  # ("Bob" is "bob": rvproto.names)
        except InvalidName as exc:
            raise LocalProtocolError(str(exc)) from None
        waiter = self._pending.wait(name)
        self._agent.connect(name, asyncio.get_running_loop().time())
        self._pump()
        try:
            return await within(timeout, waiter, f"cannot connect to {name}")
        finally:
            self._pending.forget(name, waiter)

    async def accept(self) -> Connection:
        """The next connection a peer made to us. At most ``config.accept_backlog`` wait
        for this; more are refused (the caller's ``connect`` raises ConnectionRefused)."""
        return await self._incoming.get()

    def screen_incoming(self, screen: Screen | None) -> None:
        """``screen(name)`` decides on each connection a peer makes to us, before it
        queues: None takes it, a string refuses it with that reason (None: take all)."""
        self._incoming.screen = screen

    # ------------------------------------------------------------------ plumbing

    def _agent_close(self, name: str, reason: str = "") -> None:
        assert self._agent is not None
        self._agent.close(name, asyncio.get_running_loop().time(), reason)
        self._pump()

    def _datagram(self, data: bytes, source: Address, via: Via = DIRECT) -> None:
        assert self._agent is not None
        loop = asyncio.get_running_loop()
        self._agent.receive_datagram(data, source, loop.time(), via)
        self._pump_later()

    def _pump_later(self) -> None:
        """Pump once this loop iteration is done: the datagrams it read and the writes the
        application made get one round of acknowledgements and sends, not one each."""
        if not self._pump_soon:
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._coalesced_pump)

    def _coalesced_pump(self) -> None:
        self._pump_soon = False
        if self._agent is not None and self._punch is not None:
            self._pump()

    def _on_timer(self) -> None:
        assert self._agent is not None
        self._agent.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    def _pump(self) -> None:
        agent, punch = self._agent, self._punch
        assert agent is not None and punch is not None
        loop = asyncio.get_running_loop()
        # The agent picks the socket (peer.routes); RELAY never comes out: the agent has
        # already wrapped those datagrams for the relay.
        direct: list[tuple[bytes, Address]] = []  # the punching socket's, sent together
        for data, destination, via in agent.datagrams_to_send(loop.time()):
            if isinstance(via, ExtraSocket):
                self._send_from_extra(via, data, destination)
            elif isinstance(via, OverTcp) and self._tcp is not None:
                self._tcp.send(data)
            else:
                direct.append((data, destination))
        if direct:
            punch.send_many(direct)
        while (event := agent.next_event()) is not None:
            self._dispatch(event)
        for unclaimed in self._pending.confirm(Connection._answered):
            self._admit(unclaimed)
        self._progress.set()
        self._timer.arm(agent.get_timer())

    def _send_from_extra(self, via: ExtraSocket, data: bytes, destination: Address) -> None:
        """From the birthday trick's extra socket ``via`` (peer.birthday), opened on first
        use: each a fresh mapping at a symmetric NAT."""
        if via not in self._extra:
            try:
                self._extra.open(via)
            except OSError:
                return  # out of descriptors: fewer sockets, smaller odds, nothing worse
        # A full buffer or an ICMP error: punching is lossy by nature (sendto drops it).
        self._extra.sendto(via, data, destination)

    def _read_extra(self, via: ExtraSocket, data: bytes, source: Address, now: float) -> None:
        assert self._agent is not None
        self._agent.receive_datagram(data, source, now, via)

    def _after_extra_batch(self, via: ExtraSocket) -> None:
        self._pump()

    def _dispatch(self, event: AgentEvent) -> None:
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)
        if isinstance(event, LoggedIn):
            self.public_endpoint = event.public_endpoint
            if self._attempt is not None:
                assert self._agent is not None
                now = asyncio.get_running_loop().time()
                self._attempt.logged_in(now, relay_offered=self._agent.turn is not None)
        elif isinstance(event, LoginFailed):
            log.warning("login_failed", reason=event.reason, code=event.code)
            if self._attempt is not None:
                self._attempt.login_failed(event.reason)
        elif isinstance(event, Offline):
            log.warning("offline", reason=event.reason, retry_in=round(event.retry_in, 1))
        elif isinstance(event, Online):  # (LoggedIn, just before, set public_endpoint)
            log.info("online", public=f"{event.public_endpoint[0]}:{event.public_endpoint[1]}")
        elif isinstance(event, Allocated | AllocationFailed):
            if isinstance(event, AllocationFailed):
                log.warning("relay_allocation_failed", reason=event.reason, code=event.code)
            if self._attempt is not None:
                self._attempt.relay_settled()
        elif isinstance(event, ConnectFailed):
            reason = f"cannot connect to {event.name}: {event.reason}"
            self._pending.fail(event.name, PeerError(reason))
        elif isinstance(event, Introduced):
            log.info("introduced", peer=event.introduction.name, role=event.introduction.role.name)
        elif isinstance(event, Connected):
            assert self._agent is not None
            session = self._agent.sessions[event.peer]
            connection = self._connections[event.peer] = Connection(self, event, session)
            if not self._pending.connected(connection, initiator=session.transport.initiator):
                self._admit(connection)
        elif isinstance(event, MessageReceived):
            if (receiver := self._connections.get(event.peer)) is not None:
                receiver._deliver(event.data)
        elif isinstance(event, ChannelEvent):
            if (channel := self._connections.get(event.peer)) is not None:
                channel._on_event(event.event)
        elif isinstance(event, PathChanged):
            if (moved := self._connections.get(event.peer)) is not None:
                moved.path, moved.remote = event.path, event.remote
        elif isinstance(event, SessionClosed):
            assert self._agent is not None
            # Replaced by a newer session (both sides connecting at once, or a reconnect):
            # the caller waits for that one.
            replaced = event.peer in self._agent.sessions
            self._pending.closed(event.peer, event.reason, replaced=replaced)
            if (ended := self._connections.pop(event.peer, None)) is not None:
                ended._end(event.reason)

    def _admit(self, connection: Connection) -> None:
        """To the accept queue; the caller learns at once: our ping, or our close."""
        if (refusal := self._incoming.offer(connection)) is None:
            connection._answer()
        else:
            assert self._agent is not None
            log.info("connection_refused", peer=connection.peer, reason=refusal)
            self._agent.close(connection.peer, asyncio.get_running_loop().time(), refusal)
            self._pump_later()
