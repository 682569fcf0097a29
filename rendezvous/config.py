"""The rendezvous protocol's configuration (rendezvous.introductions): lifetimes, limits,
the relay's credentials, the server's key and its login tickets."""

from __future__ import annotations

from dataclasses import dataclass, field

from rendezvous.binding import StunServiceConfig
from rendezvous.errors import ConfigError
from rendezvous.quotas import QuotaConfig
from stunproto.attributes import Address
from stunproto.client import RetransmitPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class RendezvousConfig:
    stun: StunServiceConfig
    registration_lifetime: float = 60.0  # seconds without a refresh before a peer is offline
    challenge_lifetime: float = 30.0
    max_peers: int = 100_000
    # Seconds added to both sides' punch delays. None needed: a side that starts early only
    # loses its first packets, and the other side's first probe triggers an immediate answer.
    punch_margin: float = 0.0
    # TURN REST API credentials for logged-in peers (coturn's use-auth-secret scheme), for
    # the relay at ``turn_server`` (default: this server's primary address, the embedded
    # relay). None: no relay offered.
    turn_secret: bytes | None = None
    turn_server: Address | None = None
    turn_credential_ttl: float = 24 * 3600.0
    introduction_policy: RetransmitPolicy = field(
        default_factory=lambda: RetransmitPolicy(rto=0.2, max_sends=6, rto_max=1.0)
    )
    quotas: QuotaConfig = field(default_factory=QuotaConfig)  # new names, introductions
    # The server's static X25519 private key (32 bytes; rendezvous.server_key keeps it in a
    # file). None: a fresh one per process, for tests and throwaway servers.
    server_key: bytes | None = None
    # Login tickets (rendezvous.tickets): how long a full handshake's ticket resumes logins
    # without one (its lifetime bounds what a resumption lacks: forward secrecy), and the
    # epoch its key is derived for (a new epoch voids every ticket: a key rotation).
    ticket_lifetime: float = 24 * 3600.0
    ticket_epoch: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.ticket_epoch <= 255:
            raise ConfigError("ticket_epoch is one byte: 0 to 255")
        if self.ticket_lifetime <= 0:
            raise ConfigError("ticket_lifetime must be positive")
