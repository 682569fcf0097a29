"""Sans-I/O peer: the rendezvous client and every peer session, sharing one UDP socket.

Fed with datagrams and timer ticks, drained for datagrams and events; the asyncio adapter
(peer.adapters.peer) and the in-process simulator (netsim) drive the very same object.

Every datagram carries its route (peer.routes): in, the socket it arrived on (``DIRECT``,
``ExtraSocket(i)``, ``TCP``); out, the socket to send it from. The agent decides the way:
what a session sends through our relay allocation goes into the TURN client here, and what
the rendezvous and its relay get goes over the TCP connection when the agent was
configured so (``over_tcp``).

Once logged in, the agent stays reachable: the rendezvous client logs in again after a
lost registration (peer.relogin), and each new login renews the relay allocation's
credentials and makes sure the allocation still exists (a restarted server forgot it; a new
TCP connection is a new client to it), allocating again when it is gone. Sessions with
peers go on meanwhile: they need the rendezvous only to begin.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peer.candidates import sensible_introduction
from peer.errors import LocalProtocolError, PeerError
from peer.events import (
    AgentEvent,
    Allocated,
    AllocationExpired,
    Connected,
    ConnectFailed,
    DataReceived,
    Introduced,
    LoggedIn,
    LoginFailed,
    PathChanged,
    PathKind,
    SessionClosed,
)
from peer.handshake import PEER_PACKET_TYPES
from peer.known_peers import KeyChanged, KnownPeers, Verdict
from peer.rendezvous_client import LoginState, RendezvousClient, RendezvousClientConfig
from peer.routes import DIRECT, RELAY, TCP, ExtraSocket, ThroughRelay, Transmit, Via
from peer.session import PeerSession, SessionConfig
from peer.turn_client import TurnClient, TurnClientConfig, TurnState
from rvproto.keys import PublicKeyError
from rvproto.names import is_canonical
from stunproto.attributes import Address
from stunproto.channel_data import is_channel_data

log = structlog.get_logger()


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    rendezvous: RendezvousClientConfig
    session: SessionConfig = field(default_factory=SessionConfig)
    use_relay: bool = True  # allocate on the relay the rendezvous offers, as a fallback
    # Everything to other peers goes through our relay allocation: for a peer that can
    # reach only the rendezvous (UDP blocked, TURN over TCP).
    relay_only: bool = False
    # The rendezvous (and its relay, at the same address) over the TCP connection rather
    # than UDP: the datagrams to it go out with the route TCP.
    over_tcp: bool = False

    def __post_init__(self) -> None:
        if self.over_tcp and not self.relay_only:
            # Over TCP only the rendezvous is reachable: other peers only through the relay.
            raise LocalProtocolError("over_tcp needs relay_only")


class PeerAgent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        static: X25519PrivateKey,
        known_peers: KnownPeers | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self.rendezvous = RendezvousClient(config.rendezvous, static, rng=self._rng)
        self._static = static
        self._known = known_peers
        self.sessions: dict[str, PeerSession] = {}
        self.turn: TurnClient | None = None  # our relay allocation, once offered
        self._events: deque[AgentEvent] = deque()
        self._closing: list[PeerSession] = []  # closed, with a last datagram to send

    # ------------------------------------------------------------------ commands

    def login(self, now: float) -> None:
        self.rendezvous.login(now)

    def connect(self, name: str, now: float) -> None:
        self.rendezvous.connect(name, now)
        self._collect_rendezvous(now)  # an offline refusal is an event at once

    def connection_lost(self, reason: str, now: float) -> None:
        """Over TCP: the connection to the rendezvous closed, or opening it again failed."""
        self.rendezvous.connection_lost(reason, now)
        self._collect_rendezvous(now)

    @property
    def wants_server_connection(self) -> bool:
        """Over TCP: a login is under way, so its connection to the rendezvous is needed
        (the adapter opens it again after a loss when, and only when, this says so: the
        rendezvous client's backoff decides how often)."""
        rendezvous = self.rendezvous
        logging_in = rendezvous.state in (LoginState.CHALLENGED, LoginState.HANDSHAKING)
        # Before the first login, start-up opens it (and gives up when it cannot).
        return self.config.over_tcp and logging_in and rendezvous.reachability.ever_online

    def send(self, name: str, data: bytes, now: float) -> None:
        self.sessions[name].send(data, now)

    def close(self, name: str, now: float, reason: str = "") -> None:
        session = self.sessions.get(name)
        if session is not None:
            session.close(now, reason)
            self._collect(session, now)

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, source: Address, now: float, via: Via = DIRECT) -> bool:
        """``via``: the socket it came in on (the punching socket, an extra socket, TCP)."""
        if not data:
            return False
        if data[0] < 0x40 or is_channel_data(data):
            if isinstance(via, ExtraSocket):
                return False  # the rendezvous and the relay talk to the punching socket only
            # The rendezvous and the relay may share one address (the embedded relay):
            # each claims only its own transactions and methods.
            consumed = self.rendezvous.receive_datagram(data, source, now)
            if not consumed and self.turn is not None:
                consumed = self.turn.receive_datagram(data, source, now)
            self._collect_rendezvous(now)
            self._collect_turn(now)
            return consumed
        if data[0] not in PEER_PACKET_TYPES:
            return False
        return self._to_sessions(data, source, via, now)

    def _to_sessions(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        # Sessions are few: the one already using this route first, then the others (a
        # handshake, or a peer that roamed to a new address).
        for same_route in (True, False):
            for session in self.sessions.values():
                route = session.route
                here = route is not None and route.matches(source, via)
                if here is same_route and session.receive_datagram(data, source, now, via):
                    self._collect(session, now)
                    return True
        return False

    def handle_timer(self, now: float) -> None:
        self.rendezvous.handle_timer(now)
        self._collect_rendezvous(now)
        if self.turn is not None:
            self.turn.handle_timer(now)
            self._collect_turn(now)
        for session in list(self.sessions.values()):
            timer = session.get_timer()
            if timer is not None and timer <= now:
                session.handle_timer(now)
                self._collect(session, now)

    def get_timer(self) -> float | None:
        timers = [self.rendezvous.get_timer()]
        if self.turn is not None:
            timers.append(self.turn.get_timer())
        timers += [session.get_timer() for session in self.sessions.values()]
        return min((t for t in timers if t is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        """(data, destination, the socket to send it from)."""
        out = self._to_server(self.rendezvous.datagrams_to_send(now))
        relay_only = self.config.relay_only
        for session in [*self.sessions.values(), *self._closing]:
            for data, address, via in session.datagrams_to_send(now):
                if not relay_only and not isinstance(via, ThroughRelay):
                    out.append((data, address, via))
                elif self.turn is not None:
                    self.turn.send(data, address, now)  # through our relay
            self._collect(session, now)
        self._closing = []
        if self.turn is not None:
            out += self._to_server(self.turn.datagrams_to_send(now))
            self._collect_turn(now)
        return out

    def _to_server(self, datagrams: list[tuple[bytes, Address]]) -> list[Transmit]:
        """The rendezvous's and the relay's datagrams: over TCP when so configured (to the
        rendezvous's address: only it is at the other end of the connection)."""
        if not self.config.over_tcp:
            return [(data, address, DIRECT) for data, address in datagrams]
        server = self.config.rendezvous.server
        return [
            (data, address, TCP if address == server else DIRECT) for data, address in datagrams
        ]

    def next_event(self) -> AgentEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ internals

    def _collect_rendezvous(self, now: float) -> None:
        while (event := self.rendezvous.next_event()) is not None:
            if isinstance(event, Introduced):
                self._introduce(event, now)
            elif isinstance(event, LoggedIn):
                self._events.append(event)
                self._pin_server(event.server_key)
                if event.turn is not None and self.config.use_relay:
                    self._relay_after_login(event, now)
            else:
                self._events.append(event)

    def _relay_after_login(self, event: LoggedIn, now: float) -> None:
        """Every login brings fresh relay credentials: the first allocates, later ones
        renew ours and check that the allocation outlived the loss (a refresh now rather
        than minutes later; a 437 then means allocating again, in ``_collect_turn``)."""
        credentials = event.turn
        assert credentials is not None
        turn = self.turn
        if turn is not None and turn.config.server != credentials.server:
            turn = None  # another relay now; the old allocation expires on its own there
        if turn is None:
            config = TurnClientConfig(
                server=credentials.server,
                username=credentials.username,
                password=credentials.password,
            )
            self.turn = TurnClient(config, rng=self._rng)
            self.turn.allocate(now)
            return
        turn.set_credentials(credentials.username, credentials.password)
        if turn.state is TurnState.ALLOCATED:
            turn.refresh(now)
        elif turn.state not in (TurnState.ALLOCATING, TurnState.CLOSING):
            turn.allocate(now)

    def _collect_turn(self, now: float) -> None:
        if self.turn is None:
            return
        while (event := self.turn.next_event()) is not None:
            if isinstance(event, DataReceived):
                # A peer reached us through our relay: hand it to the sessions with the
                # route RELAY, so answers go back through the relay.
                data = event.data
                if data and data[0] in PEER_PACKET_TYPES:
                    self._to_sessions(data, event.peer, RELAY, now)
                continue
            if isinstance(event, Allocated):
                self.rendezvous.set_relayed(event.relayed, now)
                for session in self.sessions.values():
                    self.turn.create_permission(session.introduction.public_endpoint[0], now)
            elif (
                isinstance(event, AllocationExpired)
                and self.rendezvous.state is LoginState.LOGGED_IN
            ):
                # Lost while we are logged in (a restarted server forgot it): allocate again
                # at once, with the credentials of our login. Offline, the next login does.
                self.turn.allocate(now)
            self._events.append(event)

    def _introduce(self, event: Introduced, now: float) -> None:
        intro = sensible_introduction(event.introduction, self.rendezvous.public_endpoint)
        if intro is None:
            log.warning("introduction_refused", reason="its public endpoint is not probed")
            return
        if intro is not event.introduction:
            event = Introduced(intro, event.received_at)
        if not is_canonical(intro.name):
            # The rendezvous only introduces canonical names (rvproto.names); anything else
            # is a broken or hostile server, and never reaches a pin or a session.
            log.warning("introduction_refused", peer=repr(intro.name), reason="not a name")
            return
        if self._known is not None:
            server = self.rendezvous.server_key  # (a name means something at one server)
            verdict = self._known.check(intro.name, intro.public_key, server)
            if verdict is Verdict.CHANGED:
                # Loud refusal (SSH-style): the rendezvous vouches for a different key than
                # the one we pinned for this name. A live session to that name ends too.
                pinned = self._known.pinned(intro.name, server)
                error = KeyChanged(intro.name, pinned, intro.public_key)
                live = self.sessions.get(intro.name)
                if live is not None:
                    live.close(now, "key changed")
                    self._collect(live, now)
                self._events.append(SessionClosed(intro.name, str(error)))
                return
            # A NEW key is pinned once the handshake has proved it (_collect), not on the
            # server's word alone.
        previous = self.sessions.get(intro.name)
        if previous is not None:
            previous.close(now, "replaced by a new introduction")
            self._collect(previous, now)
        if self.turn is not None and self.turn.relayed is not None:
            # Let the other side's packets in through our relay (permissions are per IP).
            self.turn.create_permission(intro.public_endpoint[0], now)
        try:
            session = PeerSession(
                intro,
                self._static,
                event.received_at,
                config=self.config.session,
                rng=self._rng,
                own_nat_type=self.config.rendezvous.nat_type,
                relay_only=self.config.relay_only,
            )
        except PublicKeyError:
            return  # a key with no X25519 form (the server refuses those; be safe anyway)
        self.sessions[intro.name] = session
        self._events.append(event)

    def _permit(self, session: PeerSession, now: float) -> None:
        """On the relay: make sure the peer may reach us through our allocation (the
        permission may have lapsed while the direct path carried everything)."""
        if self.turn is None or self.turn.relayed is None:
            return
        for address in (session.introduction.public_endpoint, session.remote):
            if address is not None and not self.turn.has_permission(address[0], now):
                self.turn.create_permission(address[0], now)

    def _pin_server(self, key: bytes) -> None:
        """The login's handshake proved the server holds ``key``: pin it (trust on first
        use, as SSH pins a host key; a pin is never replaced: peer forget @HOST:PORT)."""
        server = self.config.rendezvous.server
        try:
            if self._known is not None and key:
                self._known.pin_server(f"{server[0]}:{server[1]}", key)
        except PeerError as exc:  # (an unwritable pin file: said once, the login stands)
            log.warning("pin_failed", server=server[0], error=str(exc))

    def _pin(self, session: PeerSession) -> None:
        """The handshake proved the peer holds the key it was introduced with: pin it
        (trust on first use; a CHANGED key never got this far)."""
        if self._known is None:
            return
        intro = session.introduction
        try:
            server = self.rendezvous.server_key
            if self._known.check(intro.name, intro.public_key, server) is Verdict.NEW:
                self._known.remember(intro.name, intro.public_key, server)
        except PeerError as exc:  # (an unwritable pin file: said once, the session goes on)
            log.warning("pin_failed", peer=intro.name, error=str(exc))

    def _collect(self, session: PeerSession, now: float) -> None:
        while (event := session.next_event()) is not None:
            self._events.append(event)
            if isinstance(event, Connected):
                self.rendezvous.report(event.peer, str(event.path), event.elapsed)
                self._pin(session)
            if isinstance(event, Connected | PathChanged) and event.path is PathKind.RELAY:
                self._permit(session, now)
            elif isinstance(event, SessionClosed) and self.sessions.get(session.peer) is session:
                del self.sessions[session.peer]
                self._closing.append(session)


__all__ = [
    "AgentConfig",
    "AgentEvent",
    "ConnectFailed",
    "LoggedIn",
    "LoginFailed",
    "PeerAgent",
]
