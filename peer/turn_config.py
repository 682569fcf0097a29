"""The TURN client's configuration and states (peer.turn_client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from peer.errors import LocalProtocolError
from stunproto.attributes import Address
from stunproto.client import RetransmitPolicy


class TurnState(Enum):
    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"  # the Allocate was refused or unanswered
    EXPIRED = "expired"  # the allocation was lost (refresh refused, unanswered, or too late)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnClientConfig:
    server: Address
    username: str
    password: str
    lifetime: int = 600  # requested; the server may grant another (coturn: at least 600)
    # Refresh this long before the server's timer runs out (at least half-way through);
    # larger than the policy's total retransmission time so one lost refresh is retried.
    refresh_margin: float = 60.0
    # A permission or channel whose peer was silent (both ways) this long is not refreshed.
    idle_timeout: float = 300.0
    policy: RetransmitPolicy = field(
        default_factory=lambda: RetransmitPolicy(rto=0.25, max_sends=9, rto_max=2.0, final_wait=8)
    )
    fingerprint: bool = True  # cheap, and tells TURN messages apart from look-alikes
    software: str | None = None
    max_auth_retries: int = 3  # 401/438 answers followed per request before giving up
    # Relay data to a peer over a channel (ChannelBind on first send: 4 bytes of framing
    # instead of a ~40-byte Send indication, and servers rate-limit indications like
    # requests); False: Send indications and permissions only.
    channels: bool = False  # off until the coturn and TCP relay tests pass with it on

    def __post_init__(self) -> None:
        if self.lifetime <= 0 or self.refresh_margin < 0 or self.idle_timeout < 0:
            raise LocalProtocolError("lifetime must be positive, margins and timeouts >= 0")
        if self.max_auth_retries < 0:
            raise LocalProtocolError("max_auth_retries must be >= 0")
