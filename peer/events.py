"""Every event the peer's sans-I/O objects emit, in one place: the rendezvous client's
(login, introductions), the TURN client's (allocation, permissions, channels, relayed data)
and the sessions' (connected, path changes, messages, closes). All are frozen dataclasses;
``AgentEvent`` is what ``PeerAgent.next_event()`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from peer.routes import DIRECT, Via
from peer.transport.events import TransportEvent
from rvproto.messages import Introduction
from stunproto.attributes import Address


class PathKind(StrEnum):
    LAN = "lan"
    DIRECT = "direct"
    RELAY = "relay"


# ---------------------------------------------------------------- rendezvous client


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """Short-lived TURN REST credentials the rendezvous issued, for its relay."""

    server: Address
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    public_endpoint: Address
    lifetime: float
    turn: TurnCredentials | None = None
    server_key: bytes = b""  # the server's static key its handshake proved (to pin)


@dataclass(frozen=True, slots=True)
class LoginFailed:
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class Introduced:
    introduction: Introduction
    received_at: float


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    name: str
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class Offline:
    """The registration at the rendezvous was lost (a refresh unanswered or refused, the
    server restarted and forgot us, the TCP connection to it closed): nobody can be
    introduced to us until we are back. Reported once per loss; the next login attempt is
    ``retry_in`` seconds away (later ones back off further, silently)."""

    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Online:
    """Registered again after an ``Offline`` (or under a new public mapping): reachable at
    ``public_endpoint``. The first login of a peer is ``LoggedIn`` alone."""

    public_endpoint: Address


RvEvent = LoggedIn | LoginFailed | Introduced | ConnectFailed | Offline | Online


# ---------------------------------------------------------------- TURN client


@dataclass(frozen=True, slots=True)
class Allocated:
    relayed: Address
    mapped: Address | None
    lifetime: int


@dataclass(frozen=True, slots=True)
class AllocationFailed:
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class AllocationExpired:
    reason: str


@dataclass(frozen=True, slots=True)
class AllocationClosed:
    pass


@dataclass(frozen=True, slots=True)
class PermissionCreated:
    ip: str


@dataclass(frozen=True, slots=True)
class PermissionFailed:
    ip: str
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class PermissionExpired:
    """Lapsed because it was idle (not refreshed); ``send`` to that IP reinstalls it."""

    ip: str


@dataclass(frozen=True, slots=True)
class ChannelBound:
    peer: Address
    channel: int


@dataclass(frozen=True, slots=True)
class ChannelBindFailed:
    peer: Address
    channel: int
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class ChannelExpired:
    """Lapsed because it was idle; the number stays reserved for this peer and ``send``
    rebinds it (sending Send indications meanwhile)."""

    peer: Address
    channel: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    peer: Address
    data: bytes
    channel: int | None = None  # None: came in a Data indication


TurnEvent = (
    Allocated
    | AllocationFailed
    | AllocationExpired
    | AllocationClosed
    | PermissionCreated
    | PermissionFailed
    | PermissionExpired
    | ChannelBound
    | ChannelBindFailed
    | ChannelExpired
    | DataReceived
)


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Connected:
    peer: str
    path: PathKind
    remote: Address
    elapsed: float  # from introduction to proof of the path both ways
    note: str = ""  # why this path, when it is worth saying (e.g. relaying at once)
    via: Via = DIRECT  # how ``remote`` is reached (our relay, an extra socket, ...)


@dataclass(frozen=True, slots=True)
class PathChanged:
    peer: str
    path: PathKind
    remote: Address
    via: Via = DIRECT


@dataclass(frozen=True, slots=True)
class MessageReceived:
    peer: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SessionClosed:
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """Something the channel's transport reported (peer.transport.events): a stream opened,
    readable, writable or reset, a datagram."""

    peer: str
    event: TransportEvent


SessionEvent = Connected | PathChanged | MessageReceived | SessionClosed | ChannelEvent


AgentEvent = RvEvent | SessionEvent | TurnEvent
