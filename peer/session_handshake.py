"""The session's steps before the channel is up: punching toward the peer's candidates,
heeding its probes, and the Noise handshake's two messages (peer.handshake lists the packet
types). Part of ``PeerSession`` (peer.session), which owns the state these steps move."""

from __future__ import annotations

from abc import ABC, abstractmethod

from noiseproto import TransportKeys
from peer.data_plane import CHALLENGE_PACKET, DataPlane
from peer.events import PathKind
from peer.handshake import PROBE_PACKET, InitiatorHandshake, ResponderHandshake
from peer.keepalive import KeepaliveClock
from peer.paths import PathSelector
from peer.punching import Punching
from peer.routes import Route, Transmit, Via
from peer.session_state import BEFORE_HANDSHAKE, SessionState
from peer.transport.connection import TransportConnection
from stunproto.attributes import Address


class HandshakeSteps(ABC):
    # Owned by PeerSession.
    state: SessionState
    _handshake: InitiatorHandshake | ResponderHandshake
    _punching: Punching
    _paths: PathSelector
    _keepalive: KeepaliveClock
    _plane: DataPlane
    _outbox: list[Transmit]
    transport: TransportConnection

    @abstractmethod
    def _enter(self, state: SessionState) -> None: ...

    @abstractmethod
    def _finish(self, reason: str) -> None: ...

    @abstractmethod
    def _connected(self, route: Route, now: float) -> None: ...

    @abstractmethod
    def _flush(self, now: float) -> None: ...

    # ------------------------------------------------------------------ punching

    def _punch(self, now: float) -> None:
        if self.state is SessionState.WAITING:
            self._enter(SessionState.PUNCHING)
        punching = self._punching
        # On the relay, the initiator punches on for the direct path.
        current = self._paths.current
        relayed = (
            self.state is SessionState.CONNECTED
            and current is not None
            and current.kind is PathKind.RELAY
        )
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
        if self._plane.started:
            # The very answer again? The responder has not seen our confirmation yet, or
            # answered over another path too: confirm over that path. This never moves our
            # path by itself (a message 2 can be replayed): an authenticated packet back
            # over it (the path response) does, in _on_transport.
            if not handshake.is_repeat(data) or not self._punching.known_ip(Route(source, via)):
                return False
            self._outbox.append((self._plane.seal(CHALLENGE_PACKET), source, via))
            return True
        keys = handshake.read_response(data)
        if keys is None:
            return False
        self._open_channel(keys, now)
        self._connected(Route(source, via), now)
        # Prove the path to the responder at once (it waits for a first transport packet).
        self.transport.ping()
        self._flush(now)
        return True

    def _open_channel(self, keys: TransportKeys, now: float) -> None:
        self._plane.start(keys, now)
        self._keepalive.channel_opened(now)
