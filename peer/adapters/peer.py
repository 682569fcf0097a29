"""asyncio adapter: ``Peer``, the library API on top of PeerAgent, and the
:class:`~peer.adapters.connection.Connection` objects it hands out.

    async with Peer(server, identity=identity, name="alice") as me:
        conn = await me.connect("bob")
        await conn.send(b"hi")
        async for data in conn:
            ...

Only the adapters (and the CLI) touch sockets and the clock: the agent under them is
sans-I/O, and every start-up decision (transport, keepalive pacing, when the login is
done) is peer.startup's.
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
from natprobe.probe import ProbeConfig, probe, route_local_ip
from natprobe.report import NatType
from peer.adapters.connection import Connection
from peer.adapters.punch_socket import PunchSocket
from peer.adapters.server_tcp import ServerConnection
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
)
from stunproto.attributes import Address

log = structlog.get_logger()

__all__ = ["Connection", "Peer", "PeerConfig", "PeerError", "Transport"]


class Peer(AsyncLifecycle):
    """One peer online at the rendezvous: ``async with`` logs in (see peer.startup for how),
    ``connect`` and ``accept`` give connections; ``events`` carries everything else."""

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
        self._accepted: asyncio.Queue[Connection] = asyncio.Queue()
        self._waiters: dict[str, asyncio.Future[Connection]] = {}
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
            self.nat_type = report.nat_type
            self.binding_lifetime = report.binding_lifetime
        transport = first_transport(self.config.transport, self.nat_type)
        while True:
            try:
                await self._log_in(local_ip, port, transport)
                return
            except PeerError:
                fallback = fallback_transport(self.config.transport, transport)
                if fallback is None:
                    raise
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
            ),
            session=plan.session,
            relay_only=over_tcp,
            over_tcp=over_tcp,
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
        if self._agent is None:
            raise LocalProtocolError("connect before start: use 'async with Peer(...)'")
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
        for data, destination, via in agent.datagrams_to_send(loop.time()):
            if isinstance(via, ExtraSocket):
                self._send_from_extra(via, data, destination)
            elif isinstance(via, OverTcp) and self._tcp is not None:
                self._tcp.send(data)
            else:
                punch.sendto(data, destination)
        while (event := agent.next_event()) is not None:
            self._dispatch(event)
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
            self._fail(event.name, f"cannot connect to {event.name}: {event.reason}")
        elif isinstance(event, Introduced):
            log.info("introduced", peer=event.introduction.name, role=event.introduction.role.name)
        elif isinstance(event, Connected):
            assert self._agent is not None
            connection = Connection(self, event, self._agent.sessions[event.peer])
            self._connections[event.peer] = connection
            waiter = self._waiters.get(event.peer)
            if waiter is not None and not waiter.done():
                waiter.set_result(connection)
            else:
                self._accepted.put_nowait(connection)
        elif isinstance(event, MessageReceived):
            receiver = self._connections.get(event.peer)
            if receiver is not None:
                receiver._deliver(event.data)
        elif isinstance(event, ChannelEvent):
            channel = self._connections.get(event.peer)
            if channel is not None:
                channel._on_event(event.event)
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
                ended._end(event.reason)

    def _fail(self, name: str, reason: str) -> None:
        waiter = self._waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_exception(PeerError(reason))
