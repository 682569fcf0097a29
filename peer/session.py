"""Sans-I/O session with one remote peer: simultaneous punching on the rendezvous's schedule,
a Noise IK handshake whose first message is the punch packet, then an encrypted channel
with reliable ordered messages, keepalives and dead-path detection.

The session coordinates parts with one job each: punching (peer.punching: where to and how
often), the handshake (peer.handshake: the packet types are listed there), paths
(peer.paths: which route the channel uses and when it moves), keepalives (peer.keepalive)
and the data plane (peer.secure_stream). Its states move by one table
(peer.session_state); its timers are one table, ``_TIMERS``, that both ``get_timer`` and
``handle_timer`` read, so the two cannot disagree.

Routes: every datagram comes in and goes out with a route (peer.routes), the address plus
how it is reached (our punching socket, our relay allocation, an extra socket), so that a
session answers over the way the peer reached it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from natprobe.report import NatType
from peer.errors import LocalProtocolError
from peer.events import (
    Connected,
    MessageReceived,
    PathChanged,
    PathKind,
    SessionClosed,
    SessionEvent,
)
from peer.frames import Ack, Close, Data, Keepalive
from peer.handshake import (
    INIT,
    PROBE,
    PROBE_PACKET,
    RESPONSE,
    TRANSPORT,
    InitiatorHandshake,
    ResponderHandshake,
    handshake_for,
)
from peer.keepalive import KeepaliveClock
from peer.noise import TransportKeys
from peer.paths import PathSelector
from peer.punching import Punching
from peer.routes import DIRECT, Route, Transmit, Via
from peer.secure_stream import SecureStream
from peer.session_config import SessionConfig
from peer.session_state import BEFORE_HANDSHAKE, SessionState, next_state
from rvproto.messages import Introduction, Role
from stunproto.attributes import Address

__all__ = ["PeerSession", "SessionConfig", "SessionState"]

_KEEPALIVE = Keepalive().encode()


class PeerSession:
    def __init__(
        self,
        introduction: Introduction,
        static: X25519PrivateKey,
        now: float,
        *,
        config: SessionConfig | None = None,
        rng: random.Random | None = None,
        own_nat_type: NatType = NatType.UNKNOWN,
        relay_only: bool = False,
    ) -> None:
        """``relay_only``: we reach the peer only through our relay allocation (no birthday
        trick, whose extra sockets could not reach anyone)."""
        self.introduction = introduction
        self.peer = introduction.name
        self.config = config = config or SessionConfig()
        rng = rng or random.Random()
        self.role = introduction.role
        self.state = SessionState.WAITING
        self.started = now
        self._handshake = handshake_for(introduction, static)
        initiator = self.role is Role.INITIATOR
        self._handlers = _INITIATOR_HANDLERS if initiator else _RESPONDER_HANDLERS
        self._punching = Punching(
            config, introduction, rng, now, own_nat_type=own_nat_type, relay_only=relay_only
        )
        self._paths = PathSelector(config, introduction)
        self._keepalive = KeepaliveClock(config, rng, now)
        self._secure = SecureStream(config.reliability)
        self._outbox: list[Transmit] = []
        self._events: deque[SessionEvent] = deque()

    # ------------------------------------------------------------------ views

    @property
    def route(self) -> Route | None:
        """Where the channel goes, and how (None before the handshake)."""
        path = self._paths.current
        return None if path is None else path.route

    @property
    def remote(self) -> Address | None:
        path = self._paths.current
        return None if path is None else path.route.address

    @property
    def path(self) -> PathKind | None:
        path = self._paths.current
        return None if path is None else path.kind

    @property
    def candidates(self) -> tuple[Address, ...]:
        """The addresses punching goes to (the peer's, and those learnt from its probes)."""
        return tuple(route.address for route in self._punching.candidates)

    @property
    def pending(self) -> int:
        return self._secure.stream.pending

    # ------------------------------------------------------------------ commands

    def send(self, data: bytes, now: float) -> None:
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"session with {self.peer} is closed")
        self._secure.stream.send(data)

    def close(self, now: float, reason: str = "") -> None:
        """Hang up; ``reason`` (optional) is told to the peer."""
        if self.state is SessionState.CLOSED:
            return
        if self._secure.started:  # (then there is a path too)
            self._transmit(Close(reason).encode(), now)
        self._finish(reason or "closed")

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, source: Address, now: float, via: Via = DIRECT) -> bool:
        """True if the datagram was this session's (authenticated, or a probe it heeded)."""
        if self.state is SessionState.CLOSED or not data:
            return False
        if data[0] == TRANSPORT:  # the data path, before any table
            return self._on_transport(data, source, via, now)
        handler = self._handlers.get(data[0])
        return handler is not None and handler(self, data, source, via, now)

    def handle_timer(self, now: float) -> None:
        # In table order, each deadline read afresh: what one handler does (a flush sends,
        # a failover expedites the stream) moves the deadlines after it.
        for connected_only, deadline, handler in _TIMERS:
            if self.state is SessionState.CLOSED:
                return
            if connected_only and self.state is not SessionState.CONNECTED:
                continue
            at = deadline(self)
            if at is not None and at <= now:
                handler(self, now)

    def get_timer(self) -> float | None:
        if self.state is SessionState.CLOSED:
            return None
        connected = self.state is SessionState.CONNECTED
        deadlines = (deadline(self) for only, deadline, _ in _TIMERS if connected or not only)
        return min((at for at in deadlines if at is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        if self.state is SessionState.CONNECTED:
            self._flush(now)
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ punching

    def _punch(self, now: float) -> None:
        if self.state is SessionState.WAITING:
            self._enter(SessionState.PUNCHING)
        punching = self._punching
        # On the relay, the initiator punches on for the direct path.
        relayed = self.state is SessionState.CONNECTED and self.path is PathKind.RELAY
        if self.state not in (SessionState.PUNCHING, SessionState.CONFIRMING) and not relayed:
            punching.stop()
            return
        if not punching.tick(now):
            if self.state is SessionState.PUNCHING:
                self._finish("no direct path: punching found no way through")
            return
        handshake = self._handshake
        if self.state is SessionState.CONFIRMING:
            # Responder: our answer may have been lost, and the initiator's confirmation too.
            current = self._paths.current
            assert handshake.message2 is not None and current is not None
            self._outbox.append((handshake.message2, current.route.address, current.route.via))
        else:
            # The initiator's message 1, or the responder's probe (before the handshake: it
            # opens our NAT toward every candidate and, once direct punching has had its
            # chance, toward the initiator's relay, which a peer without UDP to the
            # internet sends through). On the relay already: direct candidates only.
            packet = handshake.message1 if handshake.message1 is not None else PROBE_PACKET
            relay = None if relayed else self._paths.relay_route
            self._outbox += punching.burst(packet, now, relay, birthday=not relayed)
        punching.schedule_next(now)

    def _on_probe(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        # The responder's probe got through, so its NAT now lets us in from where we are:
        # answer with the handshake at once rather than at our next punch tick, and punch
        # toward where it came from too (peer.punching says which probes count).
        if self.state not in BEFORE_HANDSHAKE:
            return False
        route = Route(source, via)
        punching = self._punching
        if not punching.known_ip(route) or not punching.learn(route):
            return False
        if punching.answer_probe(route, now):
            assert self._handshake.message1 is not None
            self._outbox.append((self._handshake.message1, source, via))
        if self.state is SessionState.WAITING:
            punching.start(now)  # the responder has started: so do we, now
        return True

    # ------------------------------------------------------------------ handshake

    def _on_init(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        route = Route(source, via)
        if not self._punching.known_ip(route):
            return False  # a replayed handshake from elsewhere gets no answer at all
        handshake = self._handshake
        assert isinstance(handshake, ResponderHandshake)
        answer = handshake.message2
        if answer is None:
            answered = handshake.answer(data)
            if answered is None:
                return False
            answer, keys = answered
            self._open_channel(keys, now)
            self._paths.use(route)
            self._enter(SessionState.CONFIRMING)
            # Repeat the answer only if no confirmation comes within a punch interval.
            self._punching.schedule_next(now)
        elif not handshake.is_repeat(data):
            return False
        # (Or again: the initiator did not get our answer yet, or it was lost.)
        self._outbox.append((answer, source, via))
        return True

    def _on_response(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        handshake = self._handshake
        assert isinstance(handshake, InitiatorHandshake)
        if self._secure.started:
            # The very answer again? The responder has not seen our confirmation yet, or
            # answered over another path too: confirm over that path. This never moves our
            # path by itself (a message 2 can be replayed): an authenticated packet back
            # over it does, in _on_transport.
            if not handshake.is_repeat(data) or not self._punching.known_ip(Route(source, via)):
                return False
            self._outbox.append((self._secure.seal(_KEEPALIVE), source, via))
            return True
        keys = handshake.read_response(data)
        if keys is None:
            return False
        self._open_channel(keys, now)
        self._connected(Route(source, via), now)
        # Prove the path to the responder at once (it waits for a first transport packet).
        self._transmit(_KEEPALIVE, now)
        return True

    def _open_channel(self, keys: TransportKeys, now: float) -> None:
        self._secure.start(keys)
        self._keepalive.channel_opened(now)

    # ------------------------------------------------------------------ transport

    def _on_transport(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        frame = self._secure.open(data)
        if frame is None:
            return False
        self._keepalive.last_received = now
        path = self._paths.current
        if (  # the usual case first (Route.matches spelt out: no call per datagram)
            path is not None
            and self.state is SessionState.CONNECTED
            and path.route.address == source
            and (path.route.via is via or path.route.via == via)
        ):
            if path.kind is not PathKind.RELAY:
                path.last_received = now
        else:
            self._from_new_route(Route(source, via), now)
        stream = self._secure.stream
        if isinstance(frame, Data):
            stream.on_data(frame)
            while (message := stream.next_delivery()) is not None:
                self._events.append(MessageReceived(self.peer, message))
        elif isinstance(frame, Ack):
            stream.on_ack(frame, now)
        elif isinstance(frame, Close):
            self._finish(f"closed by {self.peer}" + (f": {frame.reason}" if frame.reason else ""))
        return True

    def _from_new_route(self, route: Route, now: float) -> None:
        if self.state is SessionState.CONFIRMING:
            self._connected(route, now)
        elif self._paths.should_move(route, now):
            # Authenticated and fresh from a new route (a replay cannot get here: the
            # channel's window refuses it): the peer roamed, or a path came (back).
            self._switch(route, now)
        self._paths.heard(route.address, route.via, now)

    def _switch(self, route: Route, now: float) -> None:
        path = self._paths.switch(route, now)  # (connected: the only state that switches)
        if path.kind is not PathKind.RELAY and self.role is Role.INITIATOR:
            self._punching.stop()  # the direct path is found: stop punching
        self._secure.stream.expedite(now)  # what the old path may have swallowed goes out now
        self._events.append(PathChanged(self.peer, path.kind, route.address, route.via))

    def _fail_over(self, now: float) -> None:
        relay = self._paths.relay_route
        assert relay is not None  # no failover deadline without a relay
        self._switch(relay, now)

    def _repunch(self, now: float) -> None:
        # Keep our NAT's mapping toward the peer's direct route open and tell the peer (if
        # it gets through) that the direct path works again.
        route = self._paths.repunch(now)
        self._outbox.append((self._secure.seal(_KEEPALIVE), route.address, route.via))

    def _connected(self, route: Route, now: float) -> None:
        path = self._paths.use(route, now)
        self._enter(SessionState.CONNECTED)
        if path.kind is not PathKind.RELAY or self.role is Role.RESPONDER:
            self._punching.stop()  # on the relay, the initiator keeps punching for direct
        self._keepalive.last_received = now
        note = self._punching.relay_note if path.kind is PathKind.RELAY else ""
        self._events.append(
            Connected(self.peer, path.kind, route.address, now - self.started, note, route.via)
        )

    def _flush(self, now: float) -> None:
        for frame in self._secure.stream.frames_to_send(now):
            self._transmit(frame.encode(), now)

    def _transmit(self, plaintext: bytes, now: float) -> None:
        current = self._paths.current
        assert current is not None  # a started stream has a path
        route = current.route
        self._outbox.append((self._secure.seal(plaintext), route.address, route.via))
        self._keepalive.sent(now)

    def _send_keepalive(self, now: float) -> None:
        self._transmit(_KEEPALIVE, now)

    def _declare_dead(self, now: float) -> None:
        self._finish(f"path dead: nothing heard for {self.config.dead_after:.0f} s")

    def _finish(self, reason: str) -> None:
        self._enter(SessionState.CLOSED)
        self._punching.stop()
        self._events.append(SessionClosed(self.peer, reason))

    def _enter(self, state: SessionState) -> None:
        self.state = next_state(self.state, state)

    def _failover_at(self) -> float | None:
        oldest_unacked = self._secure.stream.oldest_unacked()
        return self._paths.failover_at(oldest_unacked, self._keepalive.silent_at())


# What each side heeds before and around the handshake, by packet type (peer.handshake).
_Handler = Callable[[PeerSession, bytes, Address, Via, float], bool]
_INITIATOR_HANDLERS: dict[int, _Handler] = {
    RESPONSE: PeerSession._on_response,
    PROBE: PeerSession._on_probe,
}
_RESPONDER_HANDLERS: dict[int, _Handler] = {
    INIT: PeerSession._on_init,
}


# (connected only?, deadline, what to do when it has come), in the order handle_timer runs
# them: punching, the dead-path verdict, then, on a connected channel, failover before
# re-punching before the stream's (re)transmissions before a keepalive (they may make it moot).
_TIMERS: tuple[
    tuple[bool, Callable[[PeerSession], float | None], Callable[[PeerSession, float], None]], ...
] = (
    (False, lambda s: s._punching.next_at, PeerSession._punch),
    (False, lambda s: s._keepalive.dead_at(), PeerSession._declare_dead),
    (True, PeerSession._failover_at, PeerSession._fail_over),
    (True, lambda s: s._paths.repunch_at, PeerSession._repunch),
    (True, lambda s: s._secure.stream.get_timer(), PeerSession._flush),
    (True, lambda s: s._keepalive.keepalive_at(), PeerSession._send_keepalive),
)
