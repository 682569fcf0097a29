"""The embedded TURN server's settings and protocol constants (RFC 8656 over UDP), and which
datagrams on a shared socket are TURN's."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from rendezvous.errors import ConfigError
from rendezvous.ratelimit import RateLimit
from stunproto import Method
from stunproto.message import method_of

UDP = 17  # REQUESTED-TRANSPORT value (an IANA protocol number)
PERMISSION_LIFETIME = 300.0  # RFC 8656 section 9
CHANNEL_LIFETIME = 600.0  # RFC 8656 section 12
RESERVATION_LIFETIME = 30.0  # RFC 8656 section 7.2 suggests about 30 seconds
SWEEP_INTERVAL = 1.0
PORT_COOLDOWN = 2.0  # a closed relay port is not reused at once: its socket may linger
FAILED_PORT_COOLDOWN = 60.0  # a port we could not bind is probably used by someone else

TURN_METHODS = frozenset(
    {Method.ALLOCATE, Method.REFRESH, Method.SEND, Method.CREATE_PERMISSION, Method.CHANNEL_BIND}
)

DEFAULT_DENIED_PEERS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "255.255.255.255/32",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


def is_turn_datagram(data: bytes, *, rfc5766_channels: bool = True) -> bool:
    """Whether a datagram on a shared socket is for the TURN server: ChannelData (first byte
    0x40-0x4F, RFC 8656 section 12; up to 0x7F with ``rfc5766_channels``) or a STUN message
    with a TURN method."""
    if not data:
        return False
    if 0x40 <= data[0] <= (0x7F if rfc5766_channels else 0x4F):
        return True
    if len(data) < 20 or data[0] >= 0x40:
        return False
    return method_of(data) in TURN_METHODS


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnConfig:
    realm: str
    shared_secret: bytes
    relay_ip: str  # relay sockets are bound here
    relay_ports: range = range(49152, 65536)
    external_ip: str | None = None  # advertised in XOR-RELAYED-ADDRESS (behind a 1:1 NAT)
    max_lifetime: int = 3600
    default_lifetime: int = 600
    max_allocations_per_user: int = 10
    # Per source (an IPv4 address, an IPv6 /64): credentials from a few free logins must
    # not take every relay socket.
    max_allocations_per_source: int = 20
    max_allocations: int = 1000
    max_peers_per_allocation: int = 64  # bound on permissions, and on channels
    bandwidth: float = 1_000_000.0  # bytes/s relayed per allocation, both ways together
    bandwidth_burst: float | None = None  # bucket size; default max(bandwidth, 64 KiB)
    nonce_lifetime: float = 600.0
    # Networks (CIDR) no permission may be installed for: by default the host's own and
    # private networks, so that a stranger with credentials cannot reach services behind
    # the relay (coturn's no-loopback-peers and denied-peer-ip). Tests on loopback and
    # benchmarks pass their own list.
    denied_peers: tuple[str, ...] = DEFAULT_DENIED_PEERS
    # STUN requests per source IP; a relay embedded in the rendezvous shares the
    # rendezvous's limiter instead (one bucket per source for the whole server).
    rate_limit: RateLimit = field(default_factory=RateLimit)
    max_cached_answers: int = 10_000
    software: str | None = None
    # Accept channel numbers up to 0x7FFF as RFC 5766 and coturn do: coturn's clients
    # (turnutils_uclient among them) still pick them from that range; RFC 8656 reserved
    # 0x5000-0x7FFF only to ease multiplexing with other protocols, which no socket of ours
    # carries.
    rfc5766_channels: bool = True
    # Embedded in the rendezvous, which hands relay credentials to every logged-in peer:
    # new permissions only for the IPs of peers the user was introduced to within this many
    # seconds (rendezvous.introduced), 403 for any other. None: any peer the rest of this
    # configuration allows (an open relay for logged-in peers). A standalone relay
    # (TurnRelay) has no introductions to go by: this applies only to the embedded one.
    introduced_peers_window: float | None = 600.0
    introduced_peers_max: int = 250_000  # (name, peer IP) pairs remembered for that

    def __post_init__(self) -> None:
        try:
            relay = ipaddress.ip_address(self.relay_ip)
            external = None if self.external_ip is None else ipaddress.ip_address(self.external_ip)
            for network in self.denied_peers:
                ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if relay.is_unspecified:
            raise ConfigError("relay_ip must be a concrete address (it is advertised)")
        if external is not None and external.version != relay.version:
            raise ConfigError("external_ip must be of the relay_ip's family")
        if not self.relay_ports or self.relay_ports[0] < 1 or self.relay_ports[-1] > 65535:
            raise ConfigError("relay_ports must be a non-empty range within 1-65535")
        if not 0 < self.default_lifetime <= self.max_lifetime:
            raise ConfigError("need 0 < default_lifetime <= max_lifetime")
        if self.bandwidth <= 0 or self.nonce_lifetime <= 0:
            raise ConfigError("bandwidth and nonce_lifetime must be positive")
        if (
            min(
                self.max_allocations, self.max_allocations_per_user, self.max_allocations_per_source
            )
            < 1
        ):
            raise ConfigError("allocation limits must be at least 1")
        window = self.introduced_peers_window
        if (window is not None and window <= 0) or self.introduced_peers_max < 1:
            raise ConfigError("introduced_peers_window and introduced_peers_max must be positive")
        if self.max_peers_per_allocation < 1 or self.max_cached_answers < 1:
            raise ConfigError("max_peers_per_allocation and max_cached_answers must be >= 1")
