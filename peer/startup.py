"""The peer's start-up decisions, sans-I/O: which transport reaches the rendezvous first and
what to try after a failed login, how often to send keepalives given the measured NAT
binding lifetime, and when one login attempt has made the peer ready to be introduced.

The asyncio ``Peer`` (peer.adapters.peer) opens the sockets and waits; every choice it
makes on the way is one of these functions or a :class:`LoginAttempt` transition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum

from natprobe.report import NatType
from peer.errors import PeerError, ServerUnreachable
from peer.rendezvous_requests import silence, silence_in
from peer.session_config import SessionConfig
from stunproto.attributes import Address


class Transport(StrEnum):
    """How the peer reaches the rendezvous. The values are the CLI's ``--transport``."""

    AUTO = "auto"  # UDP, falling back to TCP (and the relay) when UDP gets no answer
    UDP = "udp"
    TCP = "tcp"  # TCP to the rendezvous, everything to peers through its relay


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    """How the asyncio ``Peer`` starts: its socket, the NAT probe, keepalive pacing, the
    transport to the rendezvous and how long each step may take."""

    local_port: int = 0
    probe_nat: bool = True  # classify the NAT on the punching socket before logging in
    probe_lifetime: float | None = None  # also measure the binding lifetime (seconds max)
    # None: half the measured binding lifetime, else 15 s; 0 turns keepalives off
    keepalive: float | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    login_timeout: float = 15.0
    # AUTO: UDP, falling back to TCP (and the relay) when UDP gets no answer; or force one.
    transport: Transport = Transport.AUTO
    relay_timeout: float = 5.0  # how long to wait for the relay allocation after login
    # Connections peers made to us that may wait for ``Peer.accept()``; more are refused
    # (0: refuse any that no accept() call is waiting for).
    accept_backlog: int = 16
    # The rendezvous's static key (``rendezvous key`` prints it): its first login cannot be
    # intercepted then. None: the key pinned for that server, else the one it presents.
    server_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.transport, Transport):
            raise ValueError(f"transport must be a Transport, not {self.transport!r}")
        if self.keepalive is not None and self.keepalive < 0:
            raise ValueError("keepalive must be >= 0 (0 turns keepalives off) or None")
        if self.login_timeout <= 0 or self.relay_timeout < 0:
            raise ValueError("login_timeout must be positive and relay_timeout >= 0")
        if not 0 <= self.local_port <= 65535:
            raise ValueError(f"local_port must be 0 (any) to 65535, not {self.local_port}")
        backlog = self.accept_backlog
        if not isinstance(backlog, int) or isinstance(backlog, bool) or backlog < 0:
            raise ValueError(f"accept_backlog must be an integer >= 0, not {backlog!r}")


def first_transport(choice: Transport, nat_type: NatType) -> Transport:
    """The transport of the first login attempt."""
    if choice is not Transport.AUTO:
        return choice
    # No UDP to the rendezvous at all (offices, hotels): log in over TCP and send
    # everything through the relay, over that same connection.
    return Transport.TCP if nat_type is NatType.UDP_BLOCKED else Transport.UDP


def fallback_transport(choice: Transport, failed: Transport) -> Transport | None:
    """What to try after a login over ``failed`` got no answer or was refused: TCP, once,
    and only when the user left the choice to us; None: give up."""
    if choice is Transport.AUTO and failed is Transport.UDP:
        return Transport.TCP
    return None


# Keepalive pacing from the binding lifetime.
MIN_KEEPALIVE = 1.0  # however short the binding lifetime: no faster than this
# A path is dead after this many keepalive intervals without an answer, never sooner than
# MIN_DEAD_AFTER (a few lost keepalives are not a dead path).
DEAD_AFTER_KEEPALIVES = 4
MIN_DEAD_AFTER = 5.0
# Refreshing the registration also keeps our binding toward the rendezvous open: as often
# as the keepalives, and at least this often.
MAX_REFRESH_INTERVAL = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepalivePlan:
    session: SessionConfig  # with keepalive_interval and dead_after set
    refresh_interval: float | None  # RendezvousClientConfig's; None: the server's lifetime


def plan_keepalives(
    session: SessionConfig, *, keepalive: float | None, binding_lifetime: float | None
) -> KeepalivePlan:
    """Session and registration pacing from the configured keepalive (None: derive it; 0:
    none) and the binding lifetime a NAT probe measured (None: not measured).

    Without either, ``session`` keeps its own keepalive settings. A measured lifetime gives
    keepalives at half of it, so the binding never expires between two of them.
    """
    if keepalive is None and binding_lifetime is not None:
        keepalive = max(MIN_KEEPALIVE, binding_lifetime / 2)
    if keepalive is None:
        return KeepalivePlan(session=session, refresh_interval=None)
    if keepalive <= 0:
        # No keepalives, so silence proves nothing: no dead-path detection either.
        return KeepalivePlan(
            session=replace(session, keepalive_interval=None, dead_after=math.inf),
            refresh_interval=None,
        )
    dead_after = max(MIN_DEAD_AFTER, DEAD_AFTER_KEEPALIVES * keepalive)
    return KeepalivePlan(
        session=replace(session, keepalive_interval=keepalive, dead_after=dead_after),
        refresh_interval=min(keepalive, MAX_REFRESH_INTERVAL),
    )


class LoginPhase(Enum):
    LOGGING_IN = "logging-in"
    AWAITING_RELAY = "awaiting-relay"  # logged in; the rendezvous offered its relay
    READY = "ready"
    FAILED = "failed"


_SETTLED = frozenset({LoginPhase.READY, LoginPhase.FAILED})


class LoginAttempt:
    """One login over one transport, until the peer is ready or the attempt failed.

    Ready once logged in and, when the rendezvous offered its relay, once the allocation
    succeeded or failed: an introduction carries our relayed endpoint only once the server
    knows it, so the relay should be up before anyone is introduced to us. The relay gets
    ``relay_timeout`` after the login; then the peer is ready without it
    (``relay_missing``).
    """

    def __init__(
        self, transport: Transport, now: float, *, login_timeout: float, relay_timeout: float
    ) -> None:
        self.transport = transport
        self.phase = LoginPhase.LOGGING_IN
        self.failure: str | None = None  # why, once FAILED
        self.silence: str | None = None  # "nothing within 10 s": FAILED for want of answers
        self.relay_missing = False  # READY without the relay allocation it waited for
        self._login_timeout = login_timeout
        self._relay_timeout = relay_timeout
        self._deadline = now + login_timeout
        self._relay_settled = False  # the allocation succeeded or failed (maybe early)

    @property
    def settled(self) -> bool:
        return self.phase in _SETTLED

    def logged_in(self, now: float, *, relay_offered: bool) -> None:
        if self.phase is not LoginPhase.LOGGING_IN:
            return  # a re-login later on: start-up is over
        if relay_offered and not self._relay_settled:
            self.phase = LoginPhase.AWAITING_RELAY
            self._deadline = now + self._relay_timeout
        else:
            self.phase = LoginPhase.READY

    def login_failed(self, reason: str) -> None:
        if self.phase is LoginPhase.LOGGING_IN:
            self.silence = silence_in(reason)
            self._fail(f"login failed: {reason}")

    def connection_lost(self) -> None:
        """The TCP connection to the rendezvous closed (a UDP attempt never calls this)."""
        if self.phase is LoginPhase.LOGGING_IN:
            self._fail("the server closed the TCP connection")

    def relay_settled(self) -> None:
        """The relay allocation succeeded or failed: either way, no more waiting for it."""
        self._relay_settled = True
        if self.phase is LoginPhase.AWAITING_RELAY:
            self.phase = LoginPhase.READY

    def get_timer(self) -> float | None:
        return None if self.settled else self._deadline

    def handle_timer(self, now: float) -> None:
        if self.settled or now < self._deadline:
            return
        if self.phase is LoginPhase.LOGGING_IN:
            self.silence = silence(self._login_timeout)
            self._fail(f"login failed: no answer within {self._login_timeout:.0f} s")
        else:
            self.relay_missing = True
            self.phase = LoginPhase.READY

    def _fail(self, reason: str) -> None:
        self.phase = LoginPhase.FAILED
        self.failure = reason


def start_failure(server: Address, last: LoginAttempt | None, error: PeerError) -> PeerError:
    """What a start that gave up raises, given the last login attempt (None: none began)
    and the error that ended it: when nothing answered (no TCP connection, logins
    unanswered), one ServerUnreachable that names every transport tried ("no rendezvous
    server answers at HOST:PORT (UDP: nothing within 10 s; TCP: connection refused)");
    any other failure (a refusal, a key conflict) as it was."""
    silent = last is not None and last.phase is LoginPhase.FAILED and last.silence is not None
    if not silent:
        return error
    assert last is not None and last.silence is not None
    tried = f"{last.transport.name}: {last.silence}"
    if isinstance(error, ServerUnreachable):  # the TCP connection, after a silent login
        return ServerUnreachable(server, f"{tried}; {error.detail}")
    if str(error) == last.failure:  # this very attempt went unanswered
        return ServerUnreachable(server, tried)
    return error
