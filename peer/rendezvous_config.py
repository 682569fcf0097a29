"""The rendezvous client's configuration (peer.rendezvous_client): the server and what
to tell it, retransmissions, the relogin backoff, the server's key."""

from __future__ import annotations

from dataclasses import dataclass, field

from natprobe.report import NatType
from peer.errors import LocalProtocolError
from peer.relogin import BackoffConfig
from rvproto.names import InvalidName, canonical_name
from stunproto.attributes import Address
from stunproto.client import RetransmitPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class RendezvousClientConfig:
    server: Address
    name: str
    public_key: bytes
    private_endpoints: tuple[Address, ...] = ()
    nat_type: NatType = NatType.UNKNOWN
    # None: a third of the registration lifetime the server grants
    refresh_interval: float | None = None
    policy: RetransmitPolicy = field(
        default_factory=lambda: RetransmitPolicy(rto=0.2, max_sends=9, rto_max=1.6, final_wait=4)
    )
    relogin: BackoffConfig = field(default_factory=BackoffConfig)  # after a lost registration
    # The server's static X25519 key, pinned or given (--server-key); None: trust the key
    # the first challenge presents (then pin it, as SSH does with host keys).
    server_key: bytes | None = None

    def __post_init__(self) -> None:
        try:  # (the server takes canonical names only: "Alice" logs in as "alice")
            object.__setattr__(self, "name", canonical_name(self.name))
        except InvalidName as exc:
            raise LocalProtocolError(str(exc)) from None
