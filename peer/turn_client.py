"""Sans-I/O TURN client (RFC 8656, UDP relaying) for the peer's one punching socket.

The socket is shared with STUN, the rendezvous protocol and peer traffic, so the client only
consumes datagrams whose source is the TURN server *and* that are its own: responses to its
transactions (by transaction id), Data indications (while it holds an allocation) and
ChannelData (first byte 0x40-0x4F). Everything else is left to the caller, which matters when
the relay is embedded in the rendezvous server and both speak from the same address.

Authentication is the long-term credential mechanism with REST-style credentials (username
``"<expiry>:<name>"``, password ``base64(HMAC-SHA1(secret, username))``): the first Allocate
goes out bare, the 401 names REALM and NONCE, every later request carries MESSAGE-INTEGRITY,
and a 438 (stale nonce) is retried with the new nonce for any request.

Lifetimes: the allocation is refreshed for as long as the client wants it (until ``close``).
Permissions (300 s) and channel bindings (600 s) are refreshed only while in use: one is
renewed near the end of its lifetime only if data went to or came from that peer within the
last ``idle_timeout`` seconds. Otherwise it is left to lapse; traffic before it lapses revives
it at once, and the next ``send`` after it lapsed reinstalls it. One idle rule for both
(rather than "used since the last refresh") keeps a channel's decision in step with its
permission's, although their refresh periods differ.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from peer.events import (
    Allocated,
    AllocationClosed,
    AllocationExpired,
    AllocationFailed,
    ChannelBindFailed,
    ChannelBound,
    ChannelExpired,
    DataReceived,
    PermissionCreated,
    PermissionExpired,
    PermissionFailed,
    TurnEvent,
)
from stunproto import AttrType, ErrorCode, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.channel_data import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    decode_channel_data,
    encode_channel_data,
    is_channel_data,
)
from stunproto.client import ResponseReceived, RetransmitPolicy, StunClient, TransactionTimedOut
from stunproto.message import is_stun, long_term_key, new_transaction_id

PERMISSION_LIFETIME = 300.0  # RFC 8656 section 9, fixed: the server does not say
CHANNEL_LIFETIME = 600.0  # RFC 8656 section 12
TRANSPORT_UDP = 17
UNAUTHORIZED, ALLOCATION_MISMATCH, STALE_NONCE = 401, 437, 438
FAILED_RETRY_DELAY = 30.0  # seconds before send() asks again for a refused permission/channel


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


@dataclass(slots=True)
class _Lease:
    """A permission (per peer IP) or channel binding (per peer address) on the server."""

    expires_at: float | None = None  # our conservative view of the server's timer
    refresh_at: float | None = None
    last_use: float = -math.inf  # last send to or receive from the peer
    pending: bool = False  # a CreatePermission/ChannelBind is in flight
    announced: bool = False  # the Created/Bound event was emitted
    # After a failure send() waits this long before asking again on its own, so a server
    # that refuses does not get one request per datagram.
    retry_after: float = -math.inf

    def live(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at

    def wants_request(self, now: float) -> bool:
        """For send(): not installed, nothing in flight, not refused just now."""
        return not self.live(now) and not self.pending and now >= self.retry_after


@dataclass(slots=True)
class _Channel(_Lease):
    number: int = 0
    peer: Address = ("", 0)


@dataclass(slots=True)
class _Request:
    kind: str  # allocate, refresh, close, permission, channel
    attributes: tuple[tuple[int, Any], ...]  # without the credential attributes
    key: bytes | None  # the integrity key it was signed with
    first_sent: float
    target: Any = None  # peer IP (permission) or peer address (channel)
    auth_tries: int = 0


_METHODS = {
    "allocate": Method.ALLOCATE,
    "refresh": Method.REFRESH,
    "close": Method.REFRESH,
    "permission": Method.CREATE_PERMISSION,
    "channel": Method.CHANNEL_BIND,
}


class TurnClient:
    def __init__(self, config: TurnClientConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng
        self._stun = StunClient(policy=config.policy)
        self._requests: dict[bytes, _Request] = {}
        self._events: deque[TurnEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self.state = TurnState.IDLE
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self._username, self._password = config.username, config.password
        self._realm: str | None = None
        self._nonce: str | None = None
        self._key: bytes | None = None
        self._expires_at: float | None = None
        self._refresh_at: float | None = None
        self._permissions: dict[str, _Lease] = {}
        self._channels: dict[Address, _Channel] = {}
        self._by_number: dict[int, _Channel] = {}

    # ------------------------------------------------------------------ commands

    def allocate(self, now: float) -> None:
        if self.state in (TurnState.ALLOCATING, TurnState.ALLOCATED, TurnState.CLOSING):
            raise RuntimeError(f"cannot allocate while {self.state.value}")
        self._reset()
        self.state = TurnState.ALLOCATING
        attributes = [(AttrType.REQUESTED_TRANSPORT, TRANSPORT_UDP)]
        attributes.append((AttrType.LIFETIME, self.config.lifetime))
        self._request("allocate", tuple(attributes), now)

    def create_permission(self, peer: str | Address, now: float) -> None:
        """Install (or refresh) a permission for the peer's IP; ports do not matter."""
        self._require_allocation()
        ip = peer if isinstance(peer, str) else peer[0]
        lease = self._permissions.setdefault(ip, _Lease())
        if not lease.pending:
            self._request_permission(ip, lease, now)

    def bind_channel(self, peer: Address, now: float) -> int:
        """Bind (or refresh) a channel to ``peer``; returns its number. A peer keeps its
        number for the life of the allocation, so a number never moves to another peer."""
        self._require_allocation()
        channel = self._channels.get(peer)
        if channel is None:
            number = CHANNEL_MIN + len(self._channels)
            if number > CHANNEL_MAX:
                raise RuntimeError("no channel numbers left")
            channel = _Channel(number=number, peer=peer)
            self._channels[peer] = self._by_number[number] = channel
        if not channel.pending:
            self._request_channel(peer, channel, now)
        return channel.number

    def send(self, data: bytes, peer: Address, now: float) -> bool:
        """Relay ``data`` to ``peer``: ChannelData over a bound channel, else a Send
        indication. A lapsed channel is rebound, a missing permission installed (the request
        goes out first, so the server sees it before the data). False without an allocation."""
        if self.state is not TurnState.ALLOCATED:
            return False
        channel = self._channels.get(peer)
        permission = self._permissions.get(peer[0])
        if channel is not None and channel.wants_request(now):
            self._request_channel(peer, channel, now)  # also reinstalls the permission
        elif permission is None or permission.wants_request(now):
            self.create_permission(peer[0], now)
        self._touch(peer, now)
        if channel is not None and channel.live(now):
            self._outbox.append((encode_channel_data(channel.number, data), self.config.server))
        else:
            indication = StunMessage(
                Method.SEND,
                MessageClass.INDICATION,
                new_transaction_id(self._rng),
                ((AttrType.XOR_PEER_ADDRESS, peer), (AttrType.DATA, data)),
            )
            encoded = indication.encode(fingerprint=self.config.fingerprint)
            self._outbox.append((encoded, self.config.server))
        return True

    def refresh(self, now: float) -> None:
        """Refresh the allocation now rather than on schedule (e.g. after a network change);
        a no-op while a refresh is in flight."""
        self._require_allocation()
        if not any(request.kind == "refresh" for request in self._requests.values()):
            self._refresh_at = None
            self._request("refresh", ((AttrType.LIFETIME, self.config.lifetime),), now)

    def close(self, now: float) -> None:
        """Release the allocation (Refresh with LIFETIME 0); AllocationClosed follows."""
        if self.state is TurnState.ALLOCATED:
            self._cancel_all()
            self._clear_leases()
            self.state = TurnState.CLOSING
            self._request("close", ((AttrType.LIFETIME, 0),), now)
        elif self.state is TurnState.ALLOCATING:
            self._cancel_all()
            self.state = TurnState.CLOSED
            self._events.append(AllocationClosed())

    def set_credentials(self, username: str, password: str) -> None:
        """New REST credentials (the old ones expire): used from the next request on."""
        self._username, self._password = username, password
        if self._realm is not None:
            self._key = long_term_key(username, self._realm, password)

    # ------------------------------------------------------------------ queries

    def channel_for(self, peer: Address, now: float) -> int | None:
        channel = self._channels.get(peer)
        return channel.number if channel is not None and channel.live(now) else None

    @property
    def pending_requests(self) -> int:
        """Requests in flight (an auth retry counts as the same one)."""
        return len(self._requests)

    def has_permission(self, ip: str, now: float) -> bool:
        lease = self._permissions.get(ip)
        return lease is not None and lease.live(now)

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, source: Address, now: float) -> bool:
        if source != self.config.server or not data:
            return False
        if is_channel_data(data):
            return self._on_channel_data(data, now)
        if not is_stun(data):
            return False
        try:
            message = StunMessage.parse(data)
        except StunDecodeError:
            return False
        if message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
            request = self._requests.get(message.transaction_id)
            if request is None:
                return False  # someone else's transaction (e.g. the rendezvous client's)
            if (
                message.message_class is MessageClass.SUCCESS
                and request.key is not None
                and not message.check_integrity(request.key)
            ):
                return True  # forged or corrupted: drop it and keep waiting for the real one
            consumed = self._stun.receive_datagram(data, source, now)
            self._process_events(now)
            return consumed
        if message.method == Method.DATA and message.message_class is MessageClass.INDICATION:
            return self._on_data_indication(message, now)
        return False

    def handle_timer(self, now: float) -> None:
        self._stun.handle_timer(now)
        self._process_events(now)
        if self.state is not TurnState.ALLOCATED:
            return
        if self._expires_at is not None and now >= self._expires_at:
            self._lose("allocation expired before a refresh got through")
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self.refresh(now)
        for ip, lease in list(self._permissions.items()):
            self._tick_lease(lease, now, ip, None)
        for peer, channel in self._channels.items():
            self._tick_lease(channel, now, None, peer)

    def get_timer(self) -> float | None:
        timers = [self._stun.get_timer()]
        if self.state is TurnState.ALLOCATED:
            timers += [self._refresh_at, self._expires_at]
            for lease in [*self._permissions.values(), *self._channels.values()]:
                if not lease.pending:
                    timers += [lease.refresh_at, lease.expires_at]
        return min((t for t in timers if t is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        # Requests first: a CreatePermission queued by send() must precede its data.
        out = self._stun.datagrams_to_send(now) + self._outbox
        self._outbox = []
        return out

    def next_event(self) -> TurnEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ requests

    def _request(
        self,
        kind: str,
        attributes: tuple[tuple[int, Any], ...],
        now: float,
        *,
        target: Any = None,
        auth_tries: int = 0,
        first_sent: float | None = None,
    ) -> None:
        full = list(attributes)
        if self.config.software is not None:
            full.append((AttrType.SOFTWARE, self.config.software))
        if self._key is not None:
            assert self._realm is not None and self._nonce is not None
            full += [
                (AttrType.USERNAME, self._username),
                (AttrType.REALM, self._realm),
                (AttrType.NONCE, self._nonce),
            ]
        message = StunMessage(
            _METHODS[kind], MessageClass.REQUEST, new_transaction_id(self._rng), tuple(full)
        )
        data = message.encode(integrity_key=self._key, fingerprint=self.config.fingerprint)
        self._stun.send_encoded(message.transaction_id, data, self.config.server, now)
        self._requests[message.transaction_id] = _Request(
            kind, attributes, self._key, now if first_sent is None else first_sent, target,
            auth_tries,
        )  # fmt: skip

    def _request_permission(self, ip: str, lease: _Lease, now: float) -> None:
        lease.pending = True
        attributes = ((AttrType.XOR_PEER_ADDRESS, (ip, 0)),)
        self._request("permission", attributes, now, target=ip)

    def _request_channel(self, peer: Address, channel: _Channel, now: float) -> None:
        channel.pending = True
        attributes = (
            (AttrType.CHANNEL_NUMBER, channel.number),
            (AttrType.XOR_PEER_ADDRESS, peer),
        )
        self._request("channel", attributes, now, target=peer)

    def _process_events(self, now: float) -> None:
        while (event := self._stun.next_event()) is not None:
            request = self._requests.pop(event.transaction_id, None)
            if request is None:
                continue
            if isinstance(event, TransactionTimedOut):
                self._on_failure(request, "no answer from the TURN server", None, now)
            else:
                self._on_response(request, event, now)

    def _on_response(self, request: _Request, event: ResponseReceived, now: float) -> None:
        response = event.response
        error: ErrorCode | None = response.get(AttrType.ERROR_CODE)
        if response.message_class is MessageClass.ERROR:
            code = error.code if error is not None else None
            if self._should_retry(request, response, code):
                # A new transaction with the new nonce; the lease/allocation stays pending.
                self._request(
                    request.kind, request.attributes, now, target=request.target,
                    auth_tries=request.auth_tries + 1, first_sent=request.first_sent,
                )  # fmt: skip
                return
            reason = error.reason if error is not None and error.reason else f"error {code}"
            self._on_failure(request, reason, code, now)
            return
        if request.kind == "allocate":
            self._on_allocated(request, response)
        elif request.kind == "refresh":
            self._set_allocation_lifetime(request.first_sent, response.get(AttrType.LIFETIME))
        elif request.kind == "close":
            self._closed()
        elif request.kind == "permission":
            self._on_permission(request.target, request.first_sent)
        elif request.kind == "channel":
            self._on_channel(request.target, request.first_sent)

    def _should_retry(self, request: _Request, response: StunMessage, code: int | None) -> bool:
        if request.auth_tries >= self.config.max_auth_retries:
            return False
        realm: str | None = response.get(AttrType.REALM)
        nonce: str | None = response.get(AttrType.NONCE)
        if nonce is None:
            return False
        if code == UNAUTHORIZED:
            # A 401 to a signed request means the credentials are wrong, unless the realm
            # moved; retrying would only earn the same answer.
            if realm is None or (request.key is not None and realm == self._realm):
                return False
        elif code != STALE_NONCE:
            return False
        if realm is not None:
            self._realm = realm
        if self._realm is None:
            return False
        self._nonce = nonce
        self._key = long_term_key(self._username, self._realm, self._password)
        return True

    def _on_failure(self, request: _Request, reason: str, code: int | None, now: float) -> None:
        if request.kind == "allocate":
            self.state = TurnState.FAILED
            self._events.append(AllocationFailed(reason, code))
        elif request.kind == "refresh":
            if code is None and self._expires_at is not None and now < self._expires_at:
                self._request("refresh", request.attributes, now)  # still time: try again
            else:
                self._lose(f"refresh failed: {reason}")
        elif request.kind == "close":
            self._closed()  # unanswered or refused: it expires on its own either way
        elif request.kind == "permission":
            lease = self._permissions.get(request.target)
            if lease is not None:
                self._fail_lease(lease, now)
                self._events.append(PermissionFailed(request.target, reason, code))
        elif request.kind == "channel":
            channel = self._channels.get(request.target)
            if channel is not None:
                self._fail_lease(channel, now)
                self._events.append(ChannelBindFailed(request.target, channel.number, reason, code))

    def _fail_lease(self, lease: _Lease, now: float) -> None:
        # Treated as gone even if the server may still hold it: we cannot refresh it anyway.
        lease.pending, lease.expires_at, lease.refresh_at = False, None, None
        lease.retry_after = now + FAILED_RETRY_DELAY

    def _on_allocated(self, request: _Request, response: StunMessage) -> None:
        relayed: Address | None = response.get(AttrType.XOR_RELAYED_ADDRESS)
        if relayed is None:
            self.state = TurnState.FAILED
            self._events.append(AllocationFailed("no XOR-RELAYED-ADDRESS in the answer", None))
            return
        self.relayed = relayed
        self.mapped = response.get(AttrType.XOR_MAPPED_ADDRESS)
        self.state = TurnState.ALLOCATED
        lifetime = self._set_allocation_lifetime(
            request.first_sent, response.get(AttrType.LIFETIME)
        )
        self._events.append(Allocated(relayed, self.mapped, lifetime))

    def _set_allocation_lifetime(self, sent: float, granted: int | None) -> int:
        # Timed from the first send: the server started its timer no earlier than that.
        lifetime = self.config.lifetime if granted is None else granted
        self._expires_at = sent + lifetime
        self._refresh_at = sent + max(lifetime - self.config.refresh_margin, lifetime / 2)
        return lifetime

    def _on_permission(self, ip: str, sent: float) -> None:
        lease = self._permissions.get(ip)
        if lease is None:
            return  # dropped meanwhile (close)
        self._install(lease, sent, PERMISSION_LIFETIME)
        if not lease.announced:
            lease.announced = True
            self._events.append(PermissionCreated(ip))

    def _on_channel(self, peer: Address, sent: float) -> None:
        channel = self._channels.get(peer)
        if channel is None:
            return
        self._install(channel, sent, CHANNEL_LIFETIME)
        # RFC 8656 section 12.2: a ChannelBind also installs or refreshes the permission.
        lease = self._permissions.setdefault(peer[0], _Lease(announced=True))
        if lease.expires_at is None or lease.expires_at < sent + PERMISSION_LIFETIME:
            self._install(lease, sent, PERMISSION_LIFETIME, keep_pending=True)
        if not channel.announced:
            channel.announced = True
            self._events.append(ChannelBound(peer, channel.number))

    def _install(
        self, lease: _Lease, sent: float, lifetime: float, *, keep_pending: bool = False
    ) -> None:
        if not keep_pending:
            lease.pending = False
        lease.expires_at = sent + lifetime
        margin = min(self.config.refresh_margin, lifetime / 2)
        lease.refresh_at = sent + lifetime - margin

    def _tick_lease(self, lease: _Lease, now: float, ip: str | None, peer: Address | None) -> None:
        if lease.pending:
            return
        if lease.refresh_at is not None and now >= lease.refresh_at:
            lease.refresh_at = None
            if now - lease.last_use < self.config.idle_timeout:
                if peer is not None:
                    assert isinstance(lease, _Channel)
                    self._request_channel(peer, lease, now)
                elif ip is not None:
                    self._request_permission(ip, lease, now)
                return
        if lease.expires_at is not None and now >= lease.expires_at:
            lease.expires_at = None
            if peer is not None:
                assert isinstance(lease, _Channel)
                self._events.append(ChannelExpired(peer, lease.number))
            elif ip is not None:
                del self._permissions[ip]
                self._events.append(PermissionExpired(ip))

    # ------------------------------------------------------------------ data

    def _on_channel_data(self, data: bytes, now: float) -> bool:
        if self.state not in (TurnState.ALLOCATED, TurnState.CLOSING):
            return False
        decoded = decode_channel_data(data)
        channel = None if decoded is None else self._by_number.get(decoded[0])
        if decoded is None or channel is None:
            return True  # TURN framing from our relay, just not usable: nobody else wants it
        self._touch(channel.peer, now)
        self._events.append(DataReceived(channel.peer, decoded[1], channel.number))
        return True

    def _on_data_indication(self, message: StunMessage, now: float) -> bool:
        if self.state not in (TurnState.ALLOCATED, TurnState.CLOSING):
            return False
        peer: Address | None = message.get(AttrType.XOR_PEER_ADDRESS)
        payload: bytes | None = message.get(AttrType.DATA)
        if peer is None or payload is None:
            return True
        self._touch(peer, now)
        self._events.append(DataReceived(peer, payload, None))
        return True

    def _touch(self, peer: Address, now: float) -> None:
        lease = self._permissions.get(peer[0])
        if lease is not None:
            lease.last_use = now
            if self._revivable(lease, now):
                self._request_permission(peer[0], lease, now)
        channel = self._channels.get(peer)
        if channel is not None:
            channel.last_use = now
            if self._revivable(channel, now):
                self._request_channel(peer, channel, now)

    @staticmethod
    def _revivable(lease: _Lease, now: float) -> bool:
        # Judged idle at its refresh time (so left to lapse) but in use again before it did:
        # refresh it now, or the peer's next datagrams would be dropped by the server.
        return lease.refresh_at is None and lease.live(now) and not lease.pending

    # ------------------------------------------------------------------ lifecycle

    def _require_allocation(self) -> None:
        if self.state is not TurnState.ALLOCATED:
            raise RuntimeError("allocate first")

    def _lose(self, reason: str) -> None:
        self._cancel_all()
        self._clear_leases()
        self.state = TurnState.EXPIRED
        self._events.append(AllocationExpired(reason))

    def _closed(self) -> None:
        self._clear_leases()
        self.state = TurnState.CLOSED
        self._events.append(AllocationClosed())

    def _cancel_all(self) -> None:
        for transaction_id in self._requests:
            self._stun.cancel(transaction_id)
        self._requests.clear()

    def _clear_leases(self) -> None:
        self._permissions.clear()
        self._channels.clear()
        self._by_number.clear()
        self._expires_at = self._refresh_at = None

    def _reset(self) -> None:
        self._cancel_all()
        self._clear_leases()
        self.relayed = self.mapped = None
