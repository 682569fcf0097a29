"""Sans-I/O TURN server (RFC 8656) over UDP, with coturn's "TURN REST API" credentials.

Credentials are those of coturn's ``use-auth-secret``/``static-auth-secret``: the username is
``"<unix expiry>:<name>"`` and the password ``base64(HMAC-SHA1(secret, username))``, so the
rendezvous can hand out relay credentials without sharing state with the relay, and the same
credentials work against a coturn configured with the same secret.

Nonces are stateless (expiry + HMAC bound to the client's address), so they need no table and
nothing to expire. Everything else (allocations, permissions, channels, answers kept for
retransmitted requests) is bounded by the configuration and swept by ``handle_timer``; expiry
is also checked on every use, so a late sweep never lets traffic through.

The caller owns the sockets: ``handle`` takes datagrams from the client-facing socket,
``handle_relayed`` those arriving on an allocation's relay socket, and both return the
datagrams to send as :class:`Send` (which socket to send from, and where to).
``relays_to_open``/``relays_to_close`` say which relay sockets to bind and close.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from rendezvous.ratelimit import RateLimit, SourceRateLimiter
from stunproto import AttrType, ErrorCode, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.attributes import Address, is_comprehension_required
from stunproto.channel_data import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    RFC5766_CHANNEL_MAX,
    decode_channel_data,
    encode_channel_data,
)
from stunproto.message import method_of

log = structlog.get_logger()

FiveTuple = tuple[Address, Address]  # (client source, local client-facing address); UDP

UDP = 17  # REQUESTED-TRANSPORT value (an IANA protocol number)
PERMISSION_LIFETIME = 300.0  # RFC 8656 section 9
CHANNEL_LIFETIME = 600.0  # RFC 8656 section 12
RESERVATION_LIFETIME = 30.0  # RFC 8656 section 7.2 suggests about 30 seconds
ANSWER_CACHE_TIME = 40.0  # RFC 8489's Ti: how long a client may retransmit a request
SWEEP_INTERVAL = 1.0
PORT_COOLDOWN = 2.0  # a closed relay port is not reused at once: its socket may linger
FAILED_PORT_COOLDOWN = 60.0  # a port we could not bind is probably used by someone else
# RFC 5766 allowed up to 0x7FFF, and coturn's clients (turnutils_uclient among them) still
# pick channel numbers from that range; RFC 8656 reserved 0x5000-0x7FFF only to ease
# multiplexing with other protocols, which no socket of ours carries.
_TURN_METHODS = frozenset(
    {Method.ALLOCATE, Method.REFRESH, Method.SEND, Method.CREATE_PERMISSION, Method.CHANNEL_BIND}
)
_AUTH_ATTRS = frozenset(
    {
        AttrType.USERNAME,
        AttrType.REALM,
        AttrType.NONCE,
        AttrType.MESSAGE_INTEGRITY,
        AttrType.MESSAGE_INTEGRITY_SHA256,
    }
)
# DONT-FRAGMENT is left out on purpose: RFC 8656 lets a server that cannot set the DF bit
# answer 420, which tells the client the truth.
_UNDERSTOOD: dict[int, frozenset[int]] = {
    Method.ALLOCATE: _AUTH_ATTRS
    | {
        AttrType.REQUESTED_TRANSPORT,
        AttrType.LIFETIME,
        AttrType.REQUESTED_ADDRESS_FAMILY,
        AttrType.EVEN_PORT,
        AttrType.RESERVATION_TOKEN,
    },
    Method.REFRESH: _AUTH_ATTRS | {AttrType.LIFETIME, AttrType.REQUESTED_ADDRESS_FAMILY},
    Method.CREATE_PERMISSION: _AUTH_ATTRS | {AttrType.XOR_PEER_ADDRESS},
    Method.CHANNEL_BIND: _AUTH_ATTRS | {AttrType.CHANNEL_NUMBER, AttrType.XOR_PEER_ADDRESS},
}


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
    return method_of(data) in _TURN_METHODS


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST API password for ``username`` (what coturn's use-auth-secret expects)."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def rest_credentials(secret: bytes, name: str, expires: int) -> tuple[str, str]:
    """(username, password) valid until the unix time ``expires``."""
    username = f"{expires}:{name}"
    return username, rest_password(secret, username)


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
    rate_limit: RateLimit = field(default_factory=RateLimit)  # STUN requests per source IP
    max_cached_answers: int = 10_000
    software: str | None = None
    # Accept channel numbers up to 0x7FFF as RFC 5766 and coturn do (see RFC5766_CHANNEL_MAX).
    rfc5766_channels: bool = True

    def __post_init__(self) -> None:
        relay = ipaddress.ip_address(self.relay_ip)
        if relay.is_unspecified:
            raise ValueError("relay_ip must be a concrete address (it is advertised)")
        if self.external_ip is not None and ipaddress.ip_address(self.external_ip).version != (
            relay.version
        ):
            raise ValueError("external_ip must be of the relay_ip's family")
        if not self.relay_ports or self.relay_ports[0] < 1 or self.relay_ports[-1] > 65535:
            raise ValueError("relay_ports must be a non-empty range within 1-65535")
        if not 0 < self.default_lifetime <= self.max_lifetime:
            raise ValueError("need 0 < default_lifetime <= max_lifetime")
        if self.bandwidth <= 0 or self.nonce_lifetime <= 0:
            raise ValueError("bandwidth and nonce_lifetime must be positive")
        if min(self.max_allocations, self.max_allocations_per_user) < 1:
            raise ValueError("allocation limits must be at least 1")
        if self.max_peers_per_allocation < 1 or self.max_cached_answers < 1:
            raise ValueError("max_peers_per_allocation and max_cached_answers must be >= 1")
        for network in self.denied_peers:
            ipaddress.ip_network(network, strict=False)


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    from_socket: Address  # the client-facing local address, or an allocation's relay address
    destination: Address


@dataclass(frozen=True, slots=True)
class _Credentials:
    username: str
    user: str  # the name part: quotas count per user, whatever the expiry
    key: bytes


@dataclass(slots=True)
class _Allocation:
    five_tuple: FiveTuple
    relay: Address
    username: str
    user: str
    key: bytes
    expires: float
    tokens: float
    refilled: float
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)  # -> peer, expiry
    channel_of: dict[Address, int] = field(default_factory=dict)  # peer -> channel number

    def permitted(self, ip: str, now: float) -> bool:
        expires = self.permissions.get(ip)
        return expires is not None and expires > now

    def channel(self, number: int, now: float) -> Address | None:
        bound = self.channels.get(number)
        if bound is None:
            return None
        if bound[1] <= now:
            self.unbind(number)
            return None
        return bound[0]

    def unbind(self, number: int) -> None:
        peer, _ = self.channels.pop(number)
        self.channel_of.pop(peer, None)

    def prune(self, now: float) -> None:
        for ip in [ip for ip, until in self.permissions.items() if until <= now]:
            del self.permissions[ip]
        for number in [n for n, (_, until) in self.channels.items() if until <= now]:
            self.unbind(number)


Handler = Callable[[StunMessage, FiveTuple, _Credentials, float], bytes]


class TurnServer:
    def __init__(
        self, config: TurnConfig, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.config = config
        self.limiter = SourceRateLimiter(config.rate_limit)
        self._nonce_key = random_bytes(32)
        # Port choice and Data indication ids need unpredictability, not a syscall per packet.
        self._rng = random.Random(random_bytes(16))
        self._family = ipaddress.ip_address(config.relay_ip).version
        self._advertised_ip = config.external_ip or config.relay_ip
        # Our own IPs are valid peers only at relay ports (TURN client to TURN client): any
        # other port may be the server's own (the rendezvous, this TURN port), and relaying
        # into it would let a client loop the server onto itself or borrow its address.
        self._own_ips = frozenset({config.relay_ip, self._advertised_ip})
        self._denied = [ipaddress.ip_network(n, strict=False) for n in config.denied_peers]
        self._burst = config.bandwidth_burst or max(config.bandwidth, 65536.0)
        self._channel_max = RFC5766_CHANNEL_MAX if config.rfc5766_channels else CHANNEL_MAX
        self._allocations: dict[FiveTuple, _Allocation] = {}
        self._by_relay: dict[Address, _Allocation] = {}
        self._per_user: dict[str, int] = {}
        self._ports: set[int] = set()  # bound, reserved, or waiting in _to_close
        self._reservations: dict[bytes, tuple[int, float]] = {}  # token -> port, expiry
        self._cooling: dict[int, float] = {}  # port -> when it may be reused
        self._to_open: dict[Address, None] = {}  # ordered sets
        self._to_close: dict[Address, None] = {}
        self._answers: dict[tuple[Address, Address, bytes], tuple[float, bytes]] = {}
        self._next_sweep: float | None = None
        self.dropped = 0  # relayed datagrams dropped (no permission, over bandwidth, ...)
        self._handlers: dict[int, Handler] = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
        }

    # ------------------------------------------------------------------ socket interface

    def handle(
        self, data: bytes, source: Address, local: Address, now: float, wall_now: float
    ) -> list[Send]:
        """A datagram from a client on the client-facing socket ``local``."""
        try:
            sends = self._dispatch(data, source, local, now, wall_now)
        except StunDecodeError:
            sends = []
        self._arm(now)
        return sends

    def handle_relayed(self, relay: Address, data: bytes, peer: Address, now: float) -> list[Send]:
        """A datagram from ``peer`` on the relay socket ``relay``: to the client, if permitted."""
        allocation = self._by_relay.get(relay)
        if allocation is None or allocation.expires <= now:
            return []
        if not allocation.permitted(peer[0], now) or not self._spend(allocation, len(data), now):
            self.dropped += 1
            return []
        client, local = allocation.five_tuple
        number = allocation.channel_of.get(peer)
        if number is not None and allocation.channel(number, now) is not None:
            # ChannelData over UDP needs no padding (RFC 8656 section 12.5).
            out = encode_channel_data(number, data)
        else:
            indication = StunMessage(
                Method.DATA,
                MessageClass.INDICATION,
                self._rng.getrandbits(96).to_bytes(12, "big"),
                ((AttrType.XOR_PEER_ADDRESS, peer), (AttrType.DATA, data)),
            )
            out = indication.encode()
        return [Send(out, local, client)]

    def relays_to_open(self) -> list[Address]:
        """Relay addresses to bind now (each call returns them once)."""
        opened = list(self._to_open)
        self._to_open.clear()
        return opened

    def relays_to_close(self) -> list[Address]:
        """Relay sockets to close now (each call returns them once)."""
        closed = list(self._to_close)
        self._to_close.clear()
        for _, port in closed:
            self._ports.discard(port)
        return closed

    def relay_failed(self, relay: Address, now: float) -> None:
        """The adapter could not bind ``relay``: drop its allocation (the client learns at its
        next Refresh, with 437) and keep away from that port for a while."""
        allocation = self._by_relay.get(relay)
        if allocation is not None:
            self._delete(allocation, now)
        self._to_close.pop(relay, None)
        self._ports.discard(relay[1])
        self._cooling[relay[1]] = now + FAILED_PORT_COOLDOWN
        self._arm(now)

    def get_timer(self) -> float | None:
        return self._next_sweep

    def handle_timer(self, now: float) -> None:
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = None
        self._sweep(now)
        self._arm(now)

    @property
    def allocation_count(self) -> int:
        return len(self._allocations)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(
        self, data: bytes, source: Address, local: Address, now: float, wall_now: float
    ) -> list[Send]:
        if not data:
            return []
        if CHANNEL_MIN >> 8 <= data[0] <= self._channel_max >> 8:
            return self._channel_data(data, (source, local), now)
        if len(data) < 20 or data[0] >= 0x40 or not self.limiter.allow(source[0], now):
            return []
        message = StunMessage.parse(data)
        if message.legacy:
            return []  # TURN needs the magic cookie (XOR addresses, RFC 8656)
        if message.message_class is MessageClass.INDICATION:
            if message.method == Method.SEND:
                return self._send_indication(message, (source, local), now)
            return []
        if message.message_class is not MessageClass.REQUEST:
            return []
        if message.method == Method.BINDING:
            # Like coturn: the TURN port also answers plain STUN (ICE gathers both at once).
            reply = message.reply(MessageClass.SUCCESS, (AttrType.XOR_MAPPED_ADDRESS, source))
            return [Send(reply.encode(fingerprint=_fp(message)), local, source)]
        handler = self._handlers.get(message.method)
        if handler is None:
            return [Send(self._error(message, 400, "Bad Request"), local, source)]
        # A retransmission gets the very answer the original got: otherwise a retransmitted
        # Allocate would meet its own allocation and fail with 437 (RFC 8656 section 7.2).
        key = (source, local, message.transaction_id)
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now:
            return [Send(cached[1], local, source)]
        credentials = self._authenticate(message, source, now, wall_now)
        if isinstance(credentials, bytes):
            return [Send(credentials, local, source)]  # stateless challenges are not cached
        answer = handler(message, (source, local), credentials, now)
        if len(self._answers) >= self.config.max_cached_answers:
            self._forget_answers(now)
        self._answers[key] = (now + ANSWER_CACHE_TIME, answer)
        return [Send(answer, local, source)]

    # ------------------------------------------------------------------ authentication

    def _nonce(self, source: Address, now: float) -> str:
        expiry = f"{max(0, int((now + self.config.nonce_lifetime) * 1000)):x}"
        return f"{expiry}.{self._nonce_mac(expiry, source)}"

    def _nonce_mac(self, expiry: str, source: Address) -> str:
        material = f"{expiry}|{source[0]}|{source[1]}".encode()
        return hmac.new(self._nonce_key, material, hashlib.sha256).hexdigest()[:24]

    def _nonce_valid(self, nonce: str, source: Address, now: float) -> bool:
        expiry, _, mac = nonce.partition(".")
        if not 0 < len(expiry) <= 16 or not all(c in "0123456789abcdef" for c in expiry):
            return False
        if not hmac.compare_digest(mac, self._nonce_mac(expiry, source)):
            return False
        return int(expiry, 16) / 1000 > now

    def _user_key(self, username: str, wall_now: float) -> tuple[str, bytes] | None:
        """(user, long-term key) for a REST username that has not expired."""
        stamp, _, name = username.partition(":")
        # Bounded length: int() of thousands of digits is slow (and refused by Python 3.11).
        if not 0 < len(stamp) <= 12 or not stamp.isascii() or not stamp.isdigit():
            return None
        if int(stamp) <= wall_now:
            return None
        password = rest_password(self.config.shared_secret, username)
        key = hashlib.md5(f"{username}:{self.config.realm}:{password}".encode()).digest()
        return name or username, key

    def _authenticate(
        self, message: StunMessage, source: Address, now: float, wall_now: float
    ) -> _Credentials | bytes:
        """Long-term credentials (RFC 8489 section 9.2.4): the credentials, or the error."""
        if message.integrity_offset < 0 and message.integrity_sha256_offset < 0:
            return self._challenge(message, 401, "Unauthorized", source, now)
        username = message.get(AttrType.USERNAME)
        realm = message.get(AttrType.REALM)
        nonce = message.get(AttrType.NONCE)
        if not (isinstance(username, str) and isinstance(realm, str) and isinstance(nonce, str)):
            return self._error(message, 400, "Bad Request")
        user_key = self._user_key(username, wall_now) if realm == self.config.realm else None
        if user_key is None:
            log.debug("turn_auth_refused", username=username, reason="unknown or expired")
            return self._challenge(message, 401, "Unauthorized", source, now)
        user, key = user_key
        if not message.check_integrity(key):
            log.debug("turn_auth_refused", username=username, reason="integrity")
            return self._challenge(message, 401, "Unauthorized", source, now)
        if not self._nonce_valid(nonce, source, now):
            return self._challenge(message, 438, "Stale Nonce", source, now)
        return _Credentials(username, user, key)

    def _challenge(
        self, message: StunMessage, code: int, reason: str, source: Address, now: float
    ) -> bytes:
        nonce = self._nonce(source, now)
        return self._error(
            message, code, reason, (AttrType.REALM, self.config.realm), (AttrType.NONCE, nonce)
        )

    # ------------------------------------------------------------------ requests

    def _allocate(
        self, message: StunMessage, five: FiveTuple, creds: _Credentials, now: float
    ) -> bytes:
        key = creds.key
        if self._live(five, now) is not None:
            return self._error(message, 437, "Allocation Mismatch", key=key)
        unknown = self._unknown(message)
        if unknown:
            return self._unknown_error(message, unknown, key)
        transport = message.get(AttrType.REQUESTED_TRANSPORT)
        if transport is None:
            return self._error(message, 400, "REQUESTED-TRANSPORT missing", key=key)
        if transport != UDP:
            return self._error(message, 442, "Unsupported Transport Protocol", key=key)
        family = message.get(AttrType.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family != (1 if self._family == 4 else 2):
            return self._error(message, 440, "Address Family not Supported", key=key)
        if self._per_user.get(creds.user, 0) >= self.config.max_allocations_per_user:
            return self._error(message, 486, "Allocation Quota Reached", key=key)
        if len(self._allocations) >= self.config.max_allocations:
            self._sweep(now)
            if len(self._allocations) >= self.config.max_allocations:
                return self._error(message, 508, "Insufficient Capacity", key=key)
        even_port = message.get(AttrType.EVEN_PORT)
        token = message.get(AttrType.RESERVATION_TOKEN)
        if even_port is not None and (token is not None or len(even_port) != 1):
            return self._error(message, 400, "Bad EVEN-PORT", key=key)
        if token is not None:
            reserved = self._reservations.pop(token, None)
            if reserved is None or reserved[1] <= now:
                if reserved is not None:
                    self._ports.discard(reserved[0])
                return self._error(message, 508, "Insufficient Capacity", key=key)
            port: int | None = reserved[0]
        else:
            reserve = even_port is not None and bool(even_port[0] & 0x80)
            port = self._free_port(now, even=even_port is not None, pair=reserve)
            if port is None:
                return self._error(message, 508, "Insufficient Capacity", key=key)
            if reserve:
                # R bit: keep the next port for a second Allocate bearing the token.
                token = self._rng.getrandbits(64).to_bytes(8, "big")
                self._reservations[token] = (port + 1, now + RESERVATION_LIFETIME)
                self._ports.add(port + 1)
        assert port is not None
        lifetime = self._lifetime(message.get(AttrType.LIFETIME))
        relay = (self.config.relay_ip, port)
        allocation = _Allocation(
            five_tuple=five,
            relay=relay,
            username=creds.username,
            user=creds.user,
            key=key,
            expires=now + lifetime,
            tokens=self._burst,
            refilled=now,
        )
        self._allocations[five] = allocation
        self._by_relay[relay] = allocation
        self._per_user[creds.user] = self._per_user.get(creds.user, 0) + 1
        self._ports.add(port)
        self._to_open[relay] = None
        log.info("turn_allocate", user=creds.user, client=_text(five[0]), relay=_text(relay))
        attrs: list[tuple[int, object]] = [
            (AttrType.XOR_RELAYED_ADDRESS, (self._advertised_ip, port)),
            (AttrType.LIFETIME, lifetime),
            (AttrType.XOR_MAPPED_ADDRESS, five[0]),
        ]
        if token is not None and message.get(AttrType.RESERVATION_TOKEN) is None:
            attrs.append((AttrType.RESERVATION_TOKEN, token))
        return self._success(message, key, *attrs)

    def _refresh(
        self, message: StunMessage, five: FiveTuple, creds: _Credentials, now: float
    ) -> bytes:
        allocation, error = self._owned(message, five, creds, now)
        if allocation is None:
            return error
        family = message.get(AttrType.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family != (1 if self._family == 4 else 2):
            return self._error(message, 443, "Peer Address Family Mismatch", key=creds.key)
        requested = message.get(AttrType.LIFETIME)
        if requested == 0:
            self._delete(allocation, now)
            return self._success(message, creds.key, (AttrType.LIFETIME, 0))
        lifetime = self._lifetime(requested)
        allocation.expires = now + lifetime
        return self._success(message, creds.key, (AttrType.LIFETIME, lifetime))

    def _create_permission(
        self, message: StunMessage, five: FiveTuple, creds: _Credentials, now: float
    ) -> bytes:
        allocation, error = self._owned(message, five, creds, now)
        if allocation is None:
            return error
        peers = [v for kind, v in message.attributes if kind == AttrType.XOR_PEER_ADDRESS]
        if not peers:
            return self._error(message, 400, "XOR-PEER-ADDRESS missing", key=creds.key)
        for peer in peers:
            refused = self._check_peer(message, peer, creds.key)
            if refused is not None:
                return refused  # all or nothing (RFC 8656 section 9.2)
        allocation.prune(now)
        new = {peer[0] for peer in peers} - allocation.permissions.keys()
        if len(allocation.permissions) + len(new) > self.config.max_peers_per_allocation:
            return self._error(message, 508, "Insufficient Capacity", key=creds.key)
        for peer in peers:
            allocation.permissions[peer[0]] = now + PERMISSION_LIFETIME
        return self._success(message, creds.key)

    def _channel_bind(
        self, message: StunMessage, five: FiveTuple, creds: _Credentials, now: float
    ) -> bytes:
        allocation, error = self._owned(message, five, creds, now)
        if allocation is None:
            return error
        key = creds.key
        number = message.get(AttrType.CHANNEL_NUMBER)
        peer = message.get(AttrType.XOR_PEER_ADDRESS)
        if not isinstance(number, int) or not CHANNEL_MIN <= number <= self._channel_max:
            return self._error(message, 400, "Bad CHANNEL-NUMBER", key=key)
        if peer is None:
            return self._error(message, 400, "XOR-PEER-ADDRESS missing", key=key)
        refused = self._check_peer(message, peer, key)
        if refused is not None:
            return refused
        allocation.prune(now)
        # RFC 8656 section 11.2: a channel is bound to one peer and a peer to one channel.
        bound = allocation.channel(number, now)
        if bound is not None and bound != peer:
            return self._error(message, 400, "Channel bound to another peer", key=key)
        if allocation.channel_of.get(peer, number) != number:
            return self._error(message, 400, "Peer bound to another channel", key=key)
        limit = self.config.max_peers_per_allocation
        if (bound is None and len(allocation.channels) >= limit) or (
            peer[0] not in allocation.permissions and len(allocation.permissions) >= limit
        ):
            return self._error(message, 508, "Insufficient Capacity", key=key)
        allocation.channels[number] = (peer, now + CHANNEL_LIFETIME)
        allocation.channel_of[peer] = number
        allocation.permissions[peer[0]] = now + PERMISSION_LIFETIME
        return self._success(message, key)

    # ------------------------------------------------------------------ relaying

    def _send_indication(self, message: StunMessage, five: FiveTuple, now: float) -> list[Send]:
        allocation = self._live(five, now)
        peer = message.get(AttrType.XOR_PEER_ADDRESS)
        data = message.get(AttrType.DATA)
        if allocation is None or not isinstance(peer, tuple) or not isinstance(data, bytes):
            return []
        return self._to_peer(allocation, peer, data, now)

    def _channel_data(self, data: bytes, five: FiveTuple, now: float) -> list[Send]:
        decoded = decode_channel_data(data, rfc5766=self.config.rfc5766_channels)
        allocation = self._live(five, now)
        if decoded is None or allocation is None:
            return []
        number, payload = decoded
        peer = allocation.channel(number, now)
        if peer is None:
            return []
        return self._to_peer(allocation, peer, payload, now)

    def _to_peer(
        self, allocation: _Allocation, peer: Address, data: bytes, now: float
    ) -> list[Send]:
        if (
            peer[1] == 0
            or (peer[0] in self._own_ips and peer[1] not in self.config.relay_ports)
            or not allocation.permitted(peer[0], now)
            or not self._spend(allocation, len(data), now)
        ):
            self.dropped += 1
            return []
        return [Send(data, allocation.relay, peer)]

    def _spend(self, allocation: _Allocation, size: int, now: float) -> bool:
        """Token bucket per allocation: a datagram over the budget is dropped, not queued."""
        tokens = allocation.tokens + (now - allocation.refilled) * self.config.bandwidth
        allocation.refilled = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < size:
            allocation.tokens = tokens
            return False
        allocation.tokens = tokens - size
        return True

    # ------------------------------------------------------------------ helpers

    def _live(self, five: FiveTuple, now: float) -> _Allocation | None:
        allocation = self._allocations.get(five)
        if allocation is not None and allocation.expires <= now:
            self._delete(allocation, now)
            return None
        return allocation

    def _owned(
        self, message: StunMessage, five: FiveTuple, creds: _Credentials, now: float
    ) -> tuple[_Allocation, bytes] | tuple[None, bytes]:
        """The 5-tuple's allocation, if it exists and these credentials made it."""
        allocation = self._live(five, now)
        if allocation is None:
            return None, self._error(message, 437, "Allocation Mismatch", key=creds.key)
        if allocation.username != creds.username:
            return None, self._error(message, 441, "Wrong Credentials", key=creds.key)
        unknown = self._unknown(message)
        if unknown:
            return None, self._unknown_error(message, unknown, creds.key)
        return allocation, b""

    def _check_peer(self, message: StunMessage, peer: Address, key: bytes) -> bytes | None:
        ip = ipaddress.ip_address(peer[0])
        if ip.version != self._family:
            return self._error(message, 443, "Peer Address Family Mismatch", key=key)
        # ::ffff:10.0.0.5 is 10.0.0.5: judge the IPv4 address it maps.
        judged = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if judged.is_multicast or judged.is_unspecified or any(judged in n for n in self._denied):
            return self._error(message, 403, "Forbidden", key=key)
        return None

    def _lifetime(self, requested: object) -> int:
        # RFC 8656 section 7.2: min(requested, maximum), but never below the default.
        config = self.config
        if not isinstance(requested, int):
            return config.default_lifetime
        return max(config.default_lifetime, min(requested, config.max_lifetime))

    def _free_port(self, now: float, *, even: bool = False, pair: bool = False) -> int | None:
        """A random usable relay port; ``even`` for EVEN-PORT, ``pair`` if port + 1 must be
        usable too (EVEN-PORT with the R bit)."""
        ports = self.config.relay_ports
        if len(self._ports) >= len(ports):
            return None

        def free(port: int) -> bool:
            return port in ports and port not in self._ports and self._cooling.get(port, 0.0) <= now

        def usable(port: int) -> bool:
            return (not even or port % 2 == 0) and free(port) and (not pair or free(port + 1))

        # Random ports (RFC 8656 section 7.2 wants them unpredictable), then a scan.
        for _ in range(32):
            port = ports[self._rng.randrange(len(ports))]
            if usable(port):
                return port
        start = self._rng.randrange(len(ports))
        for index in range(len(ports)):
            port = ports[(start + index) % len(ports)]
            if usable(port):
                return port
        return None

    def _delete(self, allocation: _Allocation, now: float) -> None:
        five = allocation.five_tuple
        if self._allocations.get(five) is allocation:
            del self._allocations[five]
        self._by_relay.pop(allocation.relay, None)
        count = self._per_user.get(allocation.user, 0) - 1
        if count > 0:
            self._per_user[allocation.user] = count
        else:
            self._per_user.pop(allocation.user, None)
        port = allocation.relay[1]
        self._cooling[port] = now + PORT_COOLDOWN
        if allocation.relay in self._to_open:
            del self._to_open[allocation.relay]  # never bound: nothing to close
            self._ports.discard(port)
        else:
            self._to_close[allocation.relay] = None
        log.info("turn_release", user=allocation.user, relay=_text(allocation.relay))

    def _unknown(self, message: StunMessage) -> tuple[int, ...]:
        understood = _UNDERSTOOD[message.method]
        return tuple(
            kind
            for kind, _ in message.attributes
            if is_comprehension_required(kind) and kind not in understood
        )

    def _unknown_error(self, message: StunMessage, unknown: tuple[int, ...], key: bytes) -> bytes:
        return self._error(
            message,
            420,
            "Unknown Attribute",
            (AttrType.UNKNOWN_ATTRIBUTES, unknown),
            key=key,
        )

    def _success(self, message: StunMessage, key: bytes, *attrs: tuple[int, object]) -> bytes:
        if self.config.software:
            attrs = (*attrs, (AttrType.SOFTWARE, self.config.software))
        reply = message.reply(MessageClass.SUCCESS, *attrs)
        return reply.encode(integrity_key=key, fingerprint=_fp(message))

    def _error(
        self,
        message: StunMessage,
        code: int,
        reason: str,
        *extra: tuple[int, object],
        key: bytes | None = None,
    ) -> bytes:
        attrs: list[tuple[int, object]] = [(AttrType.ERROR_CODE, ErrorCode(code, reason))]
        attrs.extend(extra)
        if self.config.software:
            attrs.append((AttrType.SOFTWARE, self.config.software))
        reply = message.reply(MessageClass.ERROR, *attrs)
        return reply.encode(integrity_key=key, fingerprint=_fp(message))

    def _forget_answers(self, now: float) -> None:
        for key in [k for k, (until, _) in self._answers.items() if until <= now]:
            del self._answers[key]
        if len(self._answers) >= self.config.max_cached_answers:
            self._answers.clear()  # bounded memory wins over answering retransmissions

    def _sweep(self, now: float) -> None:
        for allocation in [a for a in self._allocations.values() if a.expires <= now]:
            self._delete(allocation, now)
        for allocation in self._allocations.values():
            allocation.prune(now)
        self._forget_answers(now)
        for token in [t for t, (_, until) in self._reservations.items() if until <= now]:
            port, _ = self._reservations.pop(token)
            self._ports.discard(port)  # reserved, never bound: nothing to close
        for port in [p for p, until in self._cooling.items() if until <= now]:
            del self._cooling[port]

    def _arm(self, now: float) -> None:
        busy = self._allocations or self._answers or self._cooling or self._reservations
        if self._next_sweep is None and busy:
            self._next_sweep = now + SWEEP_INTERVAL


def _fp(message: StunMessage) -> bool:
    # Answer with FINGERPRINT when the client uses it (as coturn does).
    return AttrType.FINGERPRINT in message


def _text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"
