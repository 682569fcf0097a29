"""Sans-I/O session with one remote peer: simultaneous punching on the rendezvous's schedule,
a Noise IK handshake whose first message is the punch packet, then an encrypted channel
carrying a transport (streams, messages, datagrams), keepalives and dead-peer detection.

The session coordinates parts with one job each: punching (peer.punching: where to and how
often), the handshake (peer.handshake: the packet types are listed there), paths
(peer.paths: which route the channel uses and when it moves), keepalives (peer.keepalive)
and the data plane (peer.data_plane: the channel, and the transport inside it); the steps
before the channel is up are peer.session_handshake's. Its states move by one table
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
from peer.data_plane import (
    CHALLENGE_PACKET,
    PATH_CHALLENGE,
    RESPONSE_PACKET,
    DataPlane,
)
from peer.errors import LocalProtocolError
from peer.events import (
    ChannelEvent,
    Connected,
    MessageReceived,
    PathChanged,
    PathKind,
    SessionClosed,
    SessionEvent,
)
from peer.handshake import (
    INIT,
    PROBE,
    RESPONSE,
    TRANSPORT,
    handshake_for,
)
from peer.keepalive import KeepaliveClock
from peer.paths import PathSelector
from peer.punching import Punching
from peer.routes import DIRECT, Route, Transmit, Via
from peer.session_config import SessionConfig
from peer.session_handshake import HandshakeSteps
from peer.session_state import SessionState, next_state
from peer.transport import events as transport_events
from peer.transport.connection import TransportConnection
from peer.transport.errors import ErrorCode, PeerViolation, TransportDecodeError
from peer.transport.frames import PACKET
from rvproto.messages import Introduction, Role
from stunproto.attributes import Address

__all__ = ["PeerSession", "SessionConfig", "SessionState"]


class PeerSession(HandshakeSteps):
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
        self._plane = DataPlane(
            config.transport, initiator=initiator, now=now, channel=config.channel
        )
        self.transport: TransportConnection = self._plane.transport
        self._relay_probe_at: float | None = None  # failing over: the relay's next probe
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
        """Bytes sent and not yet acknowledged by the peer."""
        return self.transport.buffered

    # ------------------------------------------------------------------ commands

    def send(self, data: bytes, now: float) -> None:
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"session with {self.peer} is closed")
        self.transport.send_message(data)

    def close(self, now: float, reason: str = "") -> None:
        """Hang up; ``reason`` (optional) is told to the peer."""
        if self.state is SessionState.CLOSED:
            return
        if self._plane.started and self._paths.current is not None:
            self.transport.close(ErrorCode.NO_ERROR, reason)
            self._flush(now)  # the CONNECTION_CLOSE goes out now, before the state closes
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

    # ------------------------------------------------------------------ transport

    def _on_transport(self, data: bytes, source: Address, via: Via, now: float) -> bool:
        plaintext = self._plane.open(data)
        if plaintext is None:
            return False
        self._keepalive.last_received = now
        path = self._paths.current
        if (  # the usual case first (Route.matches spelt out: no call per datagram)
            path is not None
            and self.state is SessionState.CONNECTED
            and path.route.address == source
            and (path.route.via is via or path.route.via == via)
        ):
            path.last_received = now
        else:
            self._from_new_route(Route(source, via), now)
        kind = plaintext[0]
        if kind == PACKET:
            try:
                self.transport.receive_packet(plaintext, now)
            except (TransportDecodeError, PeerViolation) as exc:
                code = (
                    exc.code if isinstance(exc, PeerViolation) else ErrorCode.FRAME_ENCODING_ERROR
                )
                self.transport.close(code, str(exc))
                self._flush(now)
                self._finish(f"protocol error from {self.peer}: {exc}")
                return True
            self._take_transport_events()
        elif kind == PATH_CHALLENGE:
            self._outbox.append((self._plane.seal(RESPONSE_PACKET), source, via))
        # PATH_RESPONSE: the route works both ways; _from_new_route heeded it already.
        return True

    def _take_transport_events(self) -> None:
        transport, events, peer = self.transport, self._events, self.peer
        while (event := transport.next_event()) is not None:
            if type(event) is transport_events.MessageReceived:
                events.append(MessageReceived(peer, event.data))
            elif isinstance(event, transport_events.ConnectionClosedByPeer):
                reason = f": {event.reason}" if event.reason else ""
                self._finish(f"closed by {peer}{reason}")
            else:
                events.append(ChannelEvent(peer, event))

    def _from_new_route(self, route: Route, now: float) -> None:
        if self.state is SessionState.CONFIRMING:
            self._connected(route, now)
        elif self._paths.should_move(route, now):
            # Authenticated and fresh from a new route (a replay cannot get here: the
            # channel's window refuses it): the peer roamed, or a path came (back).
            self._switch(route, now)
        self._paths.heard(route.address, route.via, now)

    def _switch(self, route: Route, now: float) -> None:
        previous = self._paths.current
        path = self._paths.switch(route, now)  # (connected: the only state that switches)
        self._relay_probe_at = None
        if path.kind is not PathKind.RELAY and self.role is Role.INITIATOR:
            self._punching.stop()  # the direct path is found: stop punching
        # A new path: its round trip and capacity are unknown, and what the old one may
        # have swallowed goes out again now.
        self.transport.path_changed(now, probe_mtu=path.kind is not PathKind.RELAY)
        if previous is None or previous.kind is not path.kind:
            self._events.append(PathChanged(self.peer, path.kind, route.address, route.via))

    def _fail_over(self, now: float) -> None:
        # The direct path looks broken: move to the relay once it has answered a challenge
        # (a relay path is not chosen unless it was proven alive; its answer moves the
        # channel, in _from_new_route).
        relay = self._paths.relay_route
        assert relay is not None  # no failover deadline without a relay
        self._outbox.append((self._plane.seal(CHALLENGE_PACKET), relay.address, relay.via))
        self._relay_probe_at = now + self.config.relay_probe_interval

    def _repunch(self, now: float) -> None:
        # Keep our NAT's mapping toward the peer's direct route open and learn (from the
        # answer, if it gets through) that the direct path works again.
        route = self._paths.repunch(now)
        self._outbox.append((self._plane.seal(CHALLENGE_PACKET), route.address, route.via))

    def _connected(self, route: Route, now: float) -> None:
        path = self._paths.use(route, now)
        self._enter(SessionState.CONNECTED)
        # Larger packets where the path carries them (a relay's framing and sockets are
        # not ours to see: packets stay at the size every path carries there).
        self.transport.probe_mtu(path.kind is not PathKind.RELAY)
        if path.kind is not PathKind.RELAY or self.role is Role.RESPONDER:
            self._punching.stop()  # on the relay, the initiator keeps punching for direct
        self._keepalive.last_received = now
        note = self._punching.relay_note if path.kind is PathKind.RELAY else ""
        self._events.append(
            Connected(self.peer, path.kind, route.address, now - self.started, note, route.via)
        )

    def _flush(self, now: float) -> None:
        packets = self.transport.packets_to_send(now)
        if not packets:
            return
        current = self._paths.current
        assert current is not None  # a started channel has a path
        address, via = current.route.address, current.route.via
        channel = self._plane.channel
        if channel is not None and now >= channel.update_at:
            channel.handle_timer(now)  # a sending key this old is replaced first (WireGuard)
        seal, outbox = self._plane.seal, self._outbox
        for packet in packets:
            outbox.append((seal(packet), address, via))
        self._keepalive.sent(now)

    def _on_transport_timer(self, now: float) -> None:
        self.transport.handle_timer(now)
        self._take_transport_events()
        if self.state is SessionState.CONNECTED:
            self._flush(now)

    def _on_channel_timer(self, now: float) -> None:
        self._plane.handle_timer(now)  # the previous receive key's grace is over

    def _send_keepalive(self, now: float) -> None:
        self.transport.ping()
        self._flush(now)

    def _declare_dead(self, now: float) -> None:
        self._finish(f"path dead: nothing heard for {self.config.dead_after:.0f} s")

    def _unanswered_at(self) -> float | None:
        stalled = self.transport.stalled_since
        return None if stalled is None else stalled + self.config.unanswered_after

    def _declare_gone(self, now: float) -> None:
        self._finish(
            f"{self.peer} stopped answering: nothing acknowledged for "
            f"{self.config.unanswered_after:.0f} s"
        )

    def _finish(self, reason: str) -> None:
        self._enter(SessionState.CLOSED)
        self._punching.stop()
        self._events.append(SessionClosed(self.peer, reason))

    def _enter(self, state: SessionState) -> None:
        self.state = next_state(self.state, state)

    def _failover_at(self) -> float | None:
        at = self._paths.failover_at(self.transport.stalled_since, self._keepalive.silent_at())
        probe_at = self._relay_probe_at
        return at if at is None or probe_at is None else max(at, probe_at)


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
# them: punching, the dead-path verdicts, then, on a connected channel, failover before
# re-punching before the transport's (re)transmissions before a keepalive (they may make it
# moot), and the channel's previous receive key last (its update by time is checked in
# _flush, before sealing, as WireGuard checks a key's age on every send).
_TIMERS: tuple[
    tuple[bool, Callable[[PeerSession], float | None], Callable[[PeerSession, float], None]], ...
] = (
    (False, lambda s: s._punching.next_at, PeerSession._punch),
    (False, lambda s: s._keepalive.dead_at(), PeerSession._declare_dead),
    (True, PeerSession._unanswered_at, PeerSession._declare_gone),
    (True, PeerSession._failover_at, PeerSession._fail_over),
    (True, lambda s: s._paths.repunch_at, PeerSession._repunch),
    (True, lambda s: s.transport.get_timer(), PeerSession._on_transport_timer),
    (True, lambda s: s._keepalive.keepalive_at(), PeerSession._send_keepalive),
    (True, lambda s: s._plane.get_timer(), PeerSession._on_channel_timer),
)
