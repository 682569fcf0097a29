"""Sans-I/O session with one remote peer: simultaneous punching on the rendezvous's schedule,
a Noise IK handshake whose first message is the punch packet, then an encrypted channel
with reliable ordered messages, keepalives and dead-path detection.

Packets on the wire (first byte; STUN uses 0x00-0x3F on the same socket):
  0xA1 handshake initiation (Noise IK message 1, payload = nothing; the rendezvous token
       is in the prologue, so a message from another introduction does not even decrypt)
  0xA2 handshake response (Noise IK message 2)
  0xA3 transport (the channel: explicit counter, AEAD, replay window)
  0xA4 punch probe from the responder: opens its NAT toward the initiator, carries nothing
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peer.birthday import Birthday, BirthdayConfig, BirthdayRole, role_for, split_socket
from peer.channel import Channel, ChannelError
from peer.events import (
    Connected,
    MessageReceived,
    PathChanged,
    PathKind,
    SessionClosed,
    SessionEvent,
)
from peer.frames import Ack, Close, Data, FrameError, Keepalive, parse_frame
from peer.noise import Initiator, NoiseError, Responder
from peer.reliable import ReliabilityConfig, ReliableStream
from rvproto.keys import ed25519_to_x25519_public
from rvproto.messages import Introduction, Role
from stunproto.attributes import Address

INIT, RESPONSE, TRANSPORT, PROBE = 0xA1, 0xA2, 0xA3, 0xA4
PEER_PACKET_TYPES = frozenset({INIT, RESPONSE, TRANSPORT, PROBE})
PROLOGUE = b"holepunch peer v1\x00"
# Sessions see a peer that reaches us through our own relay allocation at a tagged address,
# so that the agent knows to send the answers back through the relay too.
RELAY_TAG = "relay:"


def via_relay(peer: Address) -> Address:
    return (RELAY_TAG + peer[0], peer[1])


def untagged(address: Address) -> tuple[Address, bool]:
    """(the real address, whether it goes through our relay allocation)."""
    if address[0].startswith(RELAY_TAG):
        return (address[0][len(RELAY_TAG) :], address[1]), True
    return address, False


MAX_LEARNED_CANDIDATES = 4


class SessionState(Enum):
    WAITING = "waiting"  # introduced; the punch schedule has not started yet
    PUNCHING = "punching"
    CONFIRMING = "confirming"  # responder: answered the handshake, awaiting first transport
    CONNECTED = "connected"
    CLOSED = "closed"


_BEFORE_HANDSHAKE = frozenset({SessionState.WAITING, SessionState.PUNCHING})
_RANK = {PathKind.LAN: 0, PathKind.DIRECT: 1, PathKind.RELAY: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    # Punching: a fast burst (the common case: both sides start together), then a slower
    # tail so that a side whose introduction was delayed by loss (a retransmitted CONNECT
    # answer or PEER request arrives seconds late) still meets the other; bounded either way
    # (50 + 36 packets per candidate with these values).
    punch_interval: float = 0.02  # cadence of the burst, seconds
    punch_burst: int = 50  # packets per candidate at that cadence (1 s)
    punch_slow_interval: float = 0.25
    punch_timeout: float = 10.0  # seconds from the first punch packet: then give up
    # No direct path after this long: also try the other side's relay allocation (the
    # channel comes up there; direct punching goes on and takes over once proven).
    relay_after: float = 1.0
    # Failover: on a direct path, data unacknowledged this long (or nothing heard for two
    # keepalive intervals and a bit) moves the channel to the relay, if there is one.
    failover_after: float = 2.0
    # On the relay, keepalives go to the last direct endpoint at this interval (doubling up
    # to ``repunch_max``), and direct packets must keep coming for ``stable_for`` seconds
    # before the channel moves back (no flapping).
    repunch_interval: float = 1.0
    repunch_max: float = 30.0
    stable_for: float = 1.0
    # Symmetric NAT against a port-restricted cone: the birthday trick (peer.birthday).
    birthday: BirthdayConfig = field(default_factory=BirthdayConfig)
    keepalive_interval: float | None = 15.0  # nothing sent for this long -> keepalive; None: off
    keepalive_jitter: float = 0.1  # +-10%, so that many peers do not beat in step
    dead_after: float = 40.0  # nothing authenticated received for this long -> path dead
    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)


class PeerSession:
    def __init__(
        self,
        introduction: Introduction,
        static: X25519PrivateKey,
        now: float,
        *,
        config: SessionConfig | None = None,
        rng: random.Random | None = None,
        own_nat_type: str = "unknown",
    ) -> None:
        self.introduction = introduction
        self.peer = introduction.name
        self.config = config or SessionConfig()
        self._rng = rng or random.Random()
        self._static = static
        self.remote_static = ed25519_to_x25519_public(introduction.public_key)
        self._prologue = PROLOGUE + introduction.token
        self.role = introduction.role
        self.state = SessionState.WAITING
        self.started = now
        self._punch_at: float | None = now + introduction.punch_delay
        self._punches_sent = 0
        self._punch_deadline: float | None = None  # set when the first punch goes out
        # LAN candidates first: on one LAN they answer first and win.
        self.candidates: tuple[Address, ...] = (
            *introduction.private_endpoints,
            introduction.public_endpoint,
        )
        self._relay_candidate = introduction.relayed_endpoint
        # Two symmetric NATs with random ports cannot be punched without prediction: go to
        # the relay at once instead of after a second of hopeless punching, and say so.
        self._hopeless = own_nat_type == "symmetric" and introduction.nat_type == "symmetric"
        self._relay_after = 0.0 if self._hopeless else self.config.relay_after
        birthday_role = role_for(own_nat_type, introduction.nat_type)
        self._birthday = Birthday(
            self.config.birthday, birthday_role, introduction.public_endpoint, self._rng
        )
        if birthday_role is not BirthdayRole.NONE:
            # Give the spray its chance before the relay takes the channel.
            self._relay_after = max(self._relay_after, 2 * self.config.relay_after)
        self._direct_remote: Address | None = None  # last proven direct (or LAN) endpoint
        self._repunch_at: float | None = None
        self._repunch_gap = self.config.repunch_interval
        self._direct_seen: tuple[Address, float] | None = None  # direct source, since when
        self._last_direct_rx = -math.inf  # last packet that came over the direct path
        self._punch_started: float | None = None
        self._learned = 0  # peer-reflexive candidates added from the responder's probes
        self._probe_answered: dict[Address, float] = {}
        self._peer_ips = frozenset(
            address[0]
            for address in (
                introduction.public_endpoint,
                *introduction.private_endpoints,
                *((introduction.relayed_endpoint,) if introduction.relayed_endpoint else ()),
            )
        )
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[SessionEvent] = deque()
        self._channel: Channel | None = None
        self.remote: Address | None = None
        self.path: PathKind | None = None
        self._stream = ReliableStream(self.config.reliability)
        self._last_sent = now
        self._last_received = now
        self._keepalive_gap = self._jittered()
        self._message1: bytes | None = None
        self._initiator: Initiator | None = None
        self._message2: bytes | None = None  # responder: cached answer for repeated inits
        self._init_seen: bytes | None = None
        if self.role is Role.INITIATOR:
            self._initiator = Initiator(static, self.remote_static, self._prologue)
            self._message1 = bytes([INIT]) + self._initiator.write_message1(b"")

    # ------------------------------------------------------------------ commands

    def send(self, data: bytes, now: float) -> None:
        if self.state is SessionState.CLOSED:
            raise RuntimeError(f"session with {self.peer} is closed")
        self._stream.send(data)

    @property
    def pending(self) -> int:
        return self._stream.pending

    def close(self, now: float, reason: str = "") -> None:
        """Hang up; ``reason`` (optional) is told to the peer."""
        if self.state is SessionState.CLOSED:
            return
        if self._channel is not None and self.remote is not None:
            self._transmit(Close(reason).encode(), now)
        self._finish(reason or "closed")

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, source: Address, now: float) -> bool:
        """True if the datagram was this session's (authenticated)."""
        if self.state is SessionState.CLOSED or not data:
            return False
        kind = data[0]
        if kind == INIT and self.role is Role.RESPONDER:
            return self._on_init(data, source, now)
        if kind == RESPONSE and self._initiator is not None:
            if self._channel is None:
                return self._on_response(data, source, now)
            return self._on_repeated_response(data, source, now)
        if kind == TRANSPORT and self._channel is not None:
            return self._on_transport(data, source, now)
        if kind == PROBE and self._message1 is not None and self.state in _BEFORE_HANDSHAKE:
            return self._on_probe(source, now)
        return False

    def _on_probe(self, source: Address, now: float) -> bool:
        # The responder's probe got through, so its NAT now lets us in from where we are:
        # answer with the handshake at once rather than at our next punch tick. A symmetric
        # NAT in front of the responder sends probes from a port the server never saw:
        # remember it as a candidate too (peer-reflexive, as in ICE). Probes carry nothing,
        # so anyone can send one: only probes from the peer's own IPs count, each source is
        # answered at most once per punch interval, and no more than a few ports are learnt.
        if not self._known_ip(source):
            return False
        if source not in self.candidates:
            if self._learned >= MAX_LEARNED_CANDIDATES:
                return False
            self._learned += 1
            self.candidates = (*self.candidates, source)
        last = self._probe_answered.get(source)
        if last is None or now >= last + self.config.punch_interval:
            self._probe_answered[source] = now
            assert self._message1 is not None
            self._outbox.append((self._message1, source))
        if self.state is SessionState.WAITING:
            self._punch_at = now  # the responder has started: so do we, now
        return True

    def _known_ip(self, source: Address) -> bool:
        """Does ``source`` belong to the peer (its public or private IPs, or our relay)? An
        unauthenticated packet from anywhere else gets nothing from us."""
        address, relayed = untagged(source)
        if relayed:
            return True  # through our own allocation, which permits only the peer's IPs
        ip = split_socket(address)[1][0]
        return ip in self._peer_ips

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._punch_at is not None and now >= self._punch_at:
            self._punch(now)
        # Sums, exactly as get_timer() computes them (see ReliableStream.frames_to_send).
        if self._channel is not None and self._last_received + self.config.dead_after <= now:
            self._finish(f"path dead: nothing heard for {self.config.dead_after:.0f} s")
            return
        if self.state is SessionState.CONNECTED:
            failover_at = self._failover_at()
            if failover_at is not None and failover_at <= now and self._failing(now):
                self._fail_over(now)
            if self._repunch_at is not None and self._repunch_at <= now:
                self._repunch(now)
            self._flush(now)
            if self._last_sent + self._keepalive_gap <= now:
                self._transmit(Keepalive().encode(), now)

    def get_timer(self) -> float | None:
        if self.state is SessionState.CLOSED:
            return None
        timers: list[float] = []
        if self._punch_at is not None:
            timers.append(self._punch_at)
        if self._channel is not None and self.config.dead_after != math.inf:
            timers.append(self._last_received + self.config.dead_after)
        if self.state is SessionState.CONNECTED:
            if self._keepalive_gap != math.inf:
                timers.append(self._last_sent + self._keepalive_gap)
            for timer in (self._failover_at(), self._repunch_at):
                if timer is not None:
                    timers.append(timer)
            stream_timer = self._stream.get_timer()
            if stream_timer is not None:
                timers.append(stream_timer)
        return min(timers, default=None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.state is SessionState.CONNECTED:
            self._flush(now)
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ punching

    def _punch(self, now: float) -> None:
        if self.state is SessionState.WAITING:
            self.state = SessionState.PUNCHING
        relayed = self.state is SessionState.CONNECTED and self.path is PathKind.RELAY
        if self.state not in (SessionState.PUNCHING, SessionState.CONFIRMING) and not relayed:
            self._punch_at = None
            return
        if self._punch_deadline is None:
            self._punch_started = now
            self._punch_deadline = now + self.config.punch_timeout
        if now >= self._punch_deadline:
            self._punch_at = None
            if self.state is SessionState.PUNCHING or self._channel is None:
                self._finish("no direct path: punching found no way through")
            return
        self._punches_sent += 1
        if self.state is SessionState.CONFIRMING:
            # Responder: our answer may have been lost, and the initiator's confirmation too.
            assert self._message2 is not None and self.remote is not None
            self._outbox.append((self._message2, self.remote))
        elif self._message1 is not None:
            targets = list(self.candidates)
            if self._relay_due(now) and not relayed:
                assert self._relay_candidate is not None
                targets.append(self._relay_candidate)
            self._outbox.extend((self._message1, candidate) for candidate in targets)
            if not relayed:
                self._outbox.extend(self._birthday.extra(self._message1))
        else:
            # Responder before the handshake: open our NAT toward every candidate (and, once
            # direct punching has had its chance, toward the initiator's relay, which a
            # peer without UDP to the internet sends through).
            targets = list(self.candidates)
            if self._relay_due(now):
                assert self._relay_candidate is not None
                targets.append(self._relay_candidate)
            self._outbox.extend((bytes([PROBE]), candidate) for candidate in targets)
            self._outbox.extend(self._birthday.extra(bytes([PROBE])))
        self._punch_at = now + self._punch_gap()

    def _relay_due(self, now: float) -> bool:
        started = self._punch_started
        return (
            self._relay_candidate is not None
            and started is not None
            and now >= started + self._relay_after
        )

    def _punch_gap(self) -> float:
        config = self.config
        fast = self._punches_sent < config.punch_burst
        return config.punch_interval if fast else config.punch_slow_interval

    def _on_init(self, data: bytes, source: Address, now: float) -> bool:
        if not self._known_ip(source):
            return False  # a replayed handshake from elsewhere gets no answer at all
        if self._message2 is not None:
            if data == self._init_seen:
                # The initiator did not get our answer yet (or it was lost): answer again.
                self._outbox.append((self._message2, source))
                return True
            return False
        responder = Responder(self._static, self._prologue)
        try:
            remote_static, _ = responder.read_message1(data[1:])
        except NoiseError:
            return False  # another introduction's handshake, or garbage
        if remote_static != self.remote_static:
            return False  # not the key the rendezvous vouched for: do not answer
        message2, keys = responder.write_message2(b"")
        self._message2 = bytes([RESPONSE]) + message2
        self._init_seen = data
        self._channel = Channel(keys)
        self._last_received = now
        self._set_remote(source)
        self.state = SessionState.CONFIRMING
        self._outbox.append((self._message2, source))
        # Repeat the answer only if no confirmation comes within a punch interval.
        self._punch_at = now + self._punch_gap()
        return True

    def _on_response(self, data: bytes, source: Address, now: float) -> bool:
        assert self._initiator is not None
        try:
            _, keys = self._initiator.read_message2(data[1:])
        except NoiseError:
            return False
        self._channel = Channel(keys)
        self._message2 = data  # to recognise the responder's repeats
        self._connected(source, now)
        # Prove the path to the responder at once (it waits for a first transport packet).
        self._transmit(Keepalive().encode(), now)
        return True

    def _on_repeated_response(self, data: bytes, source: Address, now: float) -> bool:
        if data != self._message2:
            return False
        if not self._known_ip(source):
            return False
        # The responder has not seen our confirmation yet, or answered over another path
        # too: confirm over that path. This never moves our path by itself (a message 2 can
        # be replayed): an authenticated packet back over it does, in _roam.
        assert self._channel is not None
        self._outbox.append((self._channel.seal(Keepalive().encode()), source))
        return True

    # ------------------------------------------------------------------ transport

    def _on_transport(self, data: bytes, source: Address, now: float) -> bool:
        assert self._channel is not None
        try:
            plaintext = self._channel.open(data)
            frame = parse_frame(plaintext)
        except (ChannelError, FrameError):
            return False
        self._last_received = now
        if self.state is SessionState.CONFIRMING:
            self._connected(source, now)
        elif source != self.remote:
            self._roam(source, now)
        if source == self.remote and self.path is not PathKind.RELAY:
            self._last_direct_rx = now
        if isinstance(frame, Data):
            self._stream.on_data(frame)
            while (delivered := self._stream.next_delivery()) is not None:
                self._events.append(MessageReceived(self.peer, delivered))
        elif isinstance(frame, Ack):
            self._stream.on_ack(frame, now)
        elif isinstance(frame, Close):
            self._finish(f"closed by {self.peer}" + (f": {frame.reason}" if frame.reason else ""))
        return True

    def _roam(self, source: Address, now: float) -> None:
        """An authenticated, fresh packet came from somewhere new (a replay cannot get here:
        the channel's window refuses it)."""
        kind = self._kind(source)
        if kind is PathKind.RELAY and self.path is PathKind.RELAY:
            return  # the peer answers through the other relay route: both work, keep ours
        if (
            kind is PathKind.RELAY
            and self.path is not PathKind.RELAY
            and now < self._last_direct_rx + self.config.failover_after
        ):
            return  # the peer has not noticed yet that the direct path works: stay on it
        if self.path is PathKind.RELAY and kind is not PathKind.RELAY:
            # Direct packets while on the relay: the direct path is back, but only trust it
            # once it has kept working for a while (no flapping).
            seen = self._direct_seen
            if seen is None or seen[0] != source:
                self._direct_seen = (source, now)
                return
            if now < seen[1] + self.config.stable_for:
                return
        self._switch(source, now)

    def _switch(self, remote: Address, now: float) -> None:
        self._set_remote(remote)
        self._direct_seen = None
        if self.path is not PathKind.RELAY:
            self._last_direct_rx = now  # just proven: the relay must not pull us back at once
            if self._message1 is not None and self.state is SessionState.CONNECTED:
                self._punch_at = None  # the direct path is found: stop punching
        self._stream.expedite(now)  # what the old path may have swallowed goes out now
        assert self.path is not None
        if self.path is PathKind.RELAY and self._direct_remote is not None:
            # Both sides re-punch: each keeps its own NAT open toward the other.
            self._repunch_gap = self.config.repunch_interval
            self._repunch_at = now + self._repunch_gap
        else:
            self._repunch_at = None
        self._events.append(PathChanged(self.peer, self.path, remote))

    def _failing(self, now: float) -> bool:
        """On a direct path: is it dead, as far as we can tell?"""
        oldest = self._stream.oldest_unacked()
        if oldest is not None and oldest + self.config.failover_after <= now:
            return True
        interval = self.config.keepalive_interval
        return interval is not None and self._last_received + 2.5 * interval <= now

    def _failover_at(self) -> float | None:
        if self.path is PathKind.RELAY or self._relay_candidate is None:
            return None
        timers = []
        oldest = self._stream.oldest_unacked()
        if oldest is not None:
            timers.append(oldest + self.config.failover_after)
        if self.config.keepalive_interval is not None:
            timers.append(self._last_received + 2.5 * self.config.keepalive_interval)
        return min(timers, default=None)

    def _fail_over(self, now: float) -> None:
        assert self._relay_candidate is not None
        self._switch(self._relay_candidate, now)

    def _repunch(self, now: float) -> None:
        # Keep our NAT's mapping toward the peer's direct endpoint open and tell the peer
        # (if it gets through) that the direct path works again.
        assert self._channel is not None and self._direct_remote is not None
        self._outbox.append((self._channel.seal(Keepalive().encode()), self._direct_remote))
        self._repunch_gap = min(self._repunch_gap * 2, self.config.repunch_max)
        self._repunch_at = now + self._repunch_gap

    def _connected(self, source: Address, now: float) -> None:
        self._set_remote(source)
        self.state = SessionState.CONNECTED
        if self.path is not PathKind.RELAY or self._message1 is None:
            self._punch_at = None  # on the relay, the initiator keeps punching for direct
        self._last_received = now
        assert self.path is not None
        note = ""
        if self.path is PathKind.RELAY and self._hopeless:
            note = "both NATs are symmetric: no direct path without port prediction, relaying"
        self._events.append(Connected(self.peer, self.path, source, now - self.started, note))

    def _set_remote(self, source: Address) -> None:
        self.remote = source
        self.path = self._kind(source)
        if self.path is not PathKind.RELAY:
            self._direct_remote = source

    def _kind(self, source: Address) -> PathKind:
        if untagged(source)[1] or source == self._relay_candidate:
            return PathKind.RELAY
        return PathKind.LAN if self._is_lan(source) else PathKind.DIRECT

    def _is_lan(self, source: Address) -> bool:
        # A host with a public address reports it as private too: that is not a LAN path.
        intro = self.introduction
        return source in intro.private_endpoints and source != intro.public_endpoint

    def _flush(self, now: float) -> None:
        for frame in self._stream.frames_to_send(now):
            self._transmit(frame.encode(), now)

    def _transmit(self, plaintext: bytes, now: float) -> None:
        assert self._channel is not None and self.remote is not None
        self._outbox.append((self._channel.seal(plaintext), self.remote))
        self._last_sent = now
        self._keepalive_gap = self._jittered()

    def _jittered(self) -> float:
        if self.config.keepalive_interval is None:
            return math.inf  # keepalives off (a negative control in tests, or the app's choice)
        jitter = self.config.keepalive_jitter
        return self.config.keepalive_interval * self._rng.uniform(1 - jitter, 1 + jitter)

    def _finish(self, reason: str) -> None:
        self.state = SessionState.CLOSED
        self._punch_at = None
        self._events.append(SessionClosed(self.peer, reason))
