"""The TURN requests that change allocation state, once authenticated (RFC 8656 sections
7-11): Allocate, Refresh, CreatePermission, ChannelBind. Each returns the encoded answer,
success or error, signed with the client's long-term key."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

import structlog

from rendezvous.routes import address_text
from rendezvous.turn_allocations import Allocation, AllocationTable, FiveTuple
from rendezvous.turn_auth import Credentials, TurnAuthenticator
from rendezvous.turn_config import (
    CHANNEL_LIFETIME,
    PERMISSION_LIFETIME,
    RESERVATION_LIFETIME,
    UDP,
    TurnConfig,
)
from stunproto import AttrType, MessageClass, Method, StunMessage
from stunproto.attributes import Address, is_comprehension_required
from stunproto.channel_data import CHANNEL_MAX, CHANNEL_MIN, RFC5766_CHANNEL_MAX

log = structlog.get_logger()

# (user, peer IP, now) -> whether the user may install a permission for that IP.
PeerPolicy = Callable[[str, str, float], bool]

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


class TurnRequests:
    def __init__(
        self,
        config: TurnConfig,
        table: AllocationTable,
        auth: TurnAuthenticator,
        rng: random.Random,
        burst: float,
        peer_policy: PeerPolicy | None = None,
    ) -> None:
        self.config = config
        self._policy = peer_policy
        self._table = table
        self._error = auth.error
        self._rng = rng
        self._burst = burst
        self._family = ipaddress.ip_address(config.relay_ip).version
        self._family_code = 1 if self._family == 4 else 2  # REQUESTED-ADDRESS-FAMILY
        self._advertised_ip = config.external_ip or config.relay_ip
        # Peers at our own IPs are other allocations here (relaying into our other ports is
        # refused: TurnServer._to_peer), whoever holds them: not for the peer policy.
        self._own_ips = frozenset({config.relay_ip, self._advertised_ip})
        self._denied = [ipaddress.ip_network(n, strict=False) for n in config.denied_peers]
        self._channel_max = RFC5766_CHANNEL_MAX if config.rfc5766_channels else CHANNEL_MAX

    def allocate(
        self, message: StunMessage, five: FiveTuple, creds: Credentials, now: float
    ) -> bytes:
        key, table = creds.key, self._table
        if table.live(five, now) is not None:
            return self._error(message, 437, "Allocation Mismatch", key=key)
        unknown = self._unknown(message)
        if unknown:
            return self._error(message, 420, "Unknown Attribute", unknown=unknown, key=key)
        transport = message.get(AttrType.REQUESTED_TRANSPORT)
        if transport is None:
            return self._error(message, 400, "REQUESTED-TRANSPORT missing", key=key)
        if transport != UDP:
            return self._error(message, 442, "Unsupported Transport Protocol", key=key)
        family = message.get(AttrType.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family != self._family_code:
            return self._error(message, 440, "Address Family not Supported", key=key)
        if table.allocations_of(creds.user) >= self.config.max_allocations_per_user:
            return self._error(message, 486, "Allocation Quota Reached", key=key)
        if table.allocations_from(five[0][0]) >= self.config.max_allocations_per_source:
            return self._error(message, 486, "Allocation Quota Reached", key=key)
        if len(table) >= self.config.max_allocations:
            table.sweep(now)
            if len(table) >= self.config.max_allocations:
                return self._error(message, 508, "Insufficient Capacity", key=key)
        even_port = message.get(AttrType.EVEN_PORT)
        token = message.get(AttrType.RESERVATION_TOKEN)
        if even_port is not None and (token is not None or len(even_port) != 1):
            return self._error(message, 400, "Bad EVEN-PORT", key=key)
        if token is not None:
            port = table.take_reservation(token, now)
        else:
            reserve = even_port is not None and bool(even_port[0] & 0x80)
            port = table.free_port(now, even=even_port is not None, pair=reserve)
            if port is not None and reserve:
                # R bit: keep the next port for a second Allocate bearing the token.
                token = self._rng.getrandbits(64).to_bytes(8, "big")
                table.reserve(token, port + 1, now + RESERVATION_LIFETIME)
        if port is None:
            return self._error(message, 508, "Insufficient Capacity", key=key)
        lifetime = self._lifetime(message.get(AttrType.LIFETIME))
        relay = (self.config.relay_ip, port)
        table.add(
            Allocation(
                five_tuple=five,
                relay=relay,
                username=creds.username,
                user=creds.user,
                key=key,
                expires=now + lifetime,
                tokens=self._burst,
                refilled=now,
            )
        )
        client = address_text(five[0])
        log.info("turn_allocate", user=creds.user, client=client, relay=address_text(relay))
        attrs: list[tuple[int, object]] = [
            (AttrType.XOR_RELAYED_ADDRESS, (self._advertised_ip, port)),
            (AttrType.LIFETIME, lifetime),
            (AttrType.XOR_MAPPED_ADDRESS, five[0]),
        ]
        if token is not None and message.get(AttrType.RESERVATION_TOKEN) is None:
            attrs.append((AttrType.RESERVATION_TOKEN, token))
        return self._success(message, key, *attrs)

    def refresh(
        self, message: StunMessage, five: FiveTuple, creds: Credentials, now: float
    ) -> bytes:
        allocation, error = self._owned(message, five, creds, now)
        if allocation is None:
            return error
        family = message.get(AttrType.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family != self._family_code:
            return self._error(message, 443, "Peer Address Family Mismatch", key=creds.key)
        requested = message.get(AttrType.LIFETIME)
        if requested == 0:
            self._table.delete(allocation, now)
            return self._success(message, creds.key, (AttrType.LIFETIME, 0))
        lifetime = self._lifetime(requested)
        allocation.expires = now + lifetime
        return self._success(message, creds.key, (AttrType.LIFETIME, lifetime))

    def create_permission(
        self, message: StunMessage, five: FiveTuple, creds: Credentials, now: float
    ) -> bytes:
        allocation, error = self._owned(message, five, creds, now)
        if allocation is None:
            return error
        peers = [v for kind, v in message.attributes if kind == AttrType.XOR_PEER_ADDRESS]
        if not peers:
            return self._error(message, 400, "XOR-PEER-ADDRESS missing", key=creds.key)
        for peer in peers:
            refused = self._check_peer(message, peer, creds, allocation, now)
            if refused is not None:
                return refused  # all or nothing (RFC 8656 section 9.2)
        allocation.prune(now)
        new = {peer[0] for peer in peers} - allocation.permissions.keys()
        if len(allocation.permissions) + len(new) > self.config.max_peers_per_allocation:
            return self._error(message, 508, "Insufficient Capacity", key=creds.key)
        for peer in peers:
            allocation.permissions[peer[0]] = now + PERMISSION_LIFETIME
        return self._success(message, creds.key)

    def channel_bind(
        self, message: StunMessage, five: FiveTuple, creds: Credentials, now: float
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
        refused = self._check_peer(message, peer, creds, allocation, now)
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

    # ------------------------------------------------------------------ helpers

    def _owned(
        self, message: StunMessage, five: FiveTuple, creds: Credentials, now: float
    ) -> tuple[Allocation, bytes] | tuple[None, bytes]:
        """The 5-tuple's allocation, if it exists and these credentials made it."""
        allocation = self._table.live(five, now)
        if allocation is None:
            return None, self._error(message, 437, "Allocation Mismatch", key=creds.key)
        if allocation.username != creds.username:
            return None, self._error(message, 441, "Wrong Credentials", key=creds.key)
        unknown = self._unknown(message)
        if unknown:
            error = self._error(message, 420, "Unknown Attribute", unknown=unknown, key=creds.key)
            return None, error
        return allocation, b""

    def _check_peer(
        self,
        message: StunMessage,
        peer: Address,
        creds: Credentials,
        allocation: Allocation,
        now: float,
    ) -> bytes | None:
        key = creds.key
        ip = ipaddress.ip_address(peer[0])
        if ip.version != self._family:
            return self._error(message, 443, "Peer Address Family Mismatch", key=key)
        # ::ffff:10.0.0.5 is 10.0.0.5: judge the IPv4 address it maps.
        judged = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if judged.is_multicast or judged.is_unspecified or any(judged in n for n in self._denied):
            return self._error(message, 403, "Forbidden", key=key)
        # The policy decides on new permissions; one it granted is refreshed while in use.
        if (
            self._policy is not None
            and str(judged) not in self._own_ips
            and not allocation.permitted(peer[0], now)
            and not self._policy(creds.user, peer[0], now)
        ):
            log.debug("turn_permission_refused", user=creds.user, peer=peer[0])
            return self._error(message, 403, "Forbidden: not an introduced peer", key=key)
        return None

    def _lifetime(self, requested: object) -> int:
        # RFC 8656 section 7.2: min(requested, maximum), but never below the default.
        config = self.config
        if not isinstance(requested, int):
            return config.default_lifetime
        return max(config.default_lifetime, min(requested, config.max_lifetime))

    def _unknown(self, message: StunMessage) -> tuple[int, ...]:
        understood = _UNDERSTOOD[message.method]
        return tuple(
            kind
            for kind, _ in message.attributes
            if is_comprehension_required(kind) and kind not in understood
        )

    def _success(self, message: StunMessage, key: bytes, *attrs: tuple[int, object]) -> bytes:
        if self.config.software:
            attrs = (*attrs, (AttrType.SOFTWARE, self.config.software))
        reply = message.reply(MessageClass.SUCCESS, *attrs)
        return reply.encode(integrity_key=key, fingerprint=AttrType.FINGERPRINT in message)
