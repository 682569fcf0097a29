"""Sans-I/O TURN client (RFC 8656, UDP relaying) for the peer's one punching socket.

The socket is shared with STUN, the rendezvous protocol and peer traffic, so the client only
consumes datagrams whose source is the TURN server *and* that are its own: responses to its
transactions (by transaction id), Data indications (while it holds an allocation) and
ChannelData (first byte 0x40-0x4F). Everything else is left to the caller, which matters when
the relay is embedded in the rendezvous server and both speak from the same address.

Authentication is the long-term credential mechanism with REST-style credentials
(peer.turn_auth): the first Allocate goes out bare, the 401 names REALM and NONCE, every
later request carries MESSAGE-INTEGRITY, and a 438 (stale nonce) is retried with the new
nonce for any request.

Lifetimes: the allocation is refreshed for as long as the client wants it (until ``close``);
permissions and channel bindings only while in use (peer.turn_leases). Each kind of request
is its own dataclass (peer.turn_requests).
"""

from __future__ import annotations

import random
from collections import deque

from peer.errors import LocalProtocolError
from peer.events import (
    Allocated,
    AllocationClosed,
    AllocationExpired,
    AllocationFailed,
    DataReceived,
    TurnEvent,
)
from peer.turn_auth import LongTermCredentials
from peer.turn_config import TurnClientConfig, TurnState
from peer.turn_leases import LeaseTable
from peer.turn_requests import (
    AllocateRequest,
    ChannelRequest,
    CloseRequest,
    PermissionRequest,
    RefreshRequest,
    Transaction,
    TurnRequest,
)
from stunproto import AttrType, ErrorCode, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.channel_data import decode_channel_data, encode_channel_data, is_channel_data
from stunproto.client import ResponseReceived, StunClient, TransactionTimedOut
from stunproto.message import is_stun, new_transaction_id

__all__ = ["TurnClient", "TurnClientConfig", "TurnState"]


class TurnClient:
    def __init__(self, config: TurnClientConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng
        self._stun = StunClient(policy=config.policy)
        self._requests: dict[bytes, Transaction] = {}
        self._events: deque[TurnEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self.state = TurnState.IDLE
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self._credentials = LongTermCredentials(config.username, config.password)
        self._expires_at: float | None = None
        self._refresh_at: float | None = None
        self._leases = LeaseTable(
            self._events, refresh_margin=config.refresh_margin, idle_timeout=config.idle_timeout
        )

    # ------------------------------------------------------------------ commands

    def allocate(self, now: float) -> None:
        if self.state in (TurnState.ALLOCATING, TurnState.ALLOCATED, TurnState.CLOSING):
            raise LocalProtocolError(f"cannot allocate while {self.state.value}")
        self._reset()
        self.state = TurnState.ALLOCATING
        self._request(AllocateRequest(self.config.lifetime), now)

    def create_permission(self, peer: str | Address, now: float) -> None:
        """Install (or refresh) a permission for the peer's IP; ports do not matter."""
        self._require_allocation()
        ip = peer if isinstance(peer, str) else peer[0]
        lease = self._leases.permission(ip)
        if not lease.pending:
            self._request(self._leases.ask_permission(ip, lease), now)

    def bind_channel(self, peer: Address, now: float) -> int:
        """Bind (or refresh) a channel to ``peer``; returns its number. A peer keeps its
        number for the life of the allocation, so a number never moves to another peer."""
        self._require_allocation()
        channel = self._leases.channel(peer)
        if not channel.pending:
            self._request(self._leases.ask_channel(channel), now)
        return channel.number

    def send(self, data: bytes, peer: Address, now: float) -> bool:
        """Relay ``data`` to ``peer``: ChannelData over a bound channel, else a Send
        indication. A lapsed channel is rebound, a missing permission installed (the request
        goes out first, so the server sees it before the data). False without an allocation."""
        if self.state is not TurnState.ALLOCATED:
            return False
        for request in self._leases.before_send(peer, now, bind=self.config.channels):
            self._request(request, now)
        channel = self._leases.channels.get(peer)
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
        in_flight = (transaction.request for transaction in self._requests.values())
        if not any(isinstance(request, RefreshRequest) for request in in_flight):
            self._refresh_at = None
            self._request(RefreshRequest(self.config.lifetime), now)

    def close(self, now: float) -> None:
        """Release the allocation (Refresh with LIFETIME 0); AllocationClosed follows."""
        if self.state is TurnState.ALLOCATED:
            self._cancel_all()
            self._clear_leases()
            self.state = TurnState.CLOSING
            self._request(CloseRequest(), now)
        elif self.state is TurnState.ALLOCATING:
            self._cancel_all()
            self.state = TurnState.CLOSED
            self._events.append(AllocationClosed())

    def set_credentials(self, username: str, password: str) -> None:
        """New REST credentials (the old ones expire): used from the next request on."""
        self._credentials.replace(username, password)

    # ------------------------------------------------------------------ queries

    def channel_for(self, peer: Address, now: float) -> int | None:
        channel = self._leases.channels.get(peer)
        return channel.number if channel is not None and channel.live(now) else None

    @property
    def pending_requests(self) -> int:
        """Requests in flight (an auth retry counts as the same one)."""
        return len(self._requests)

    def has_permission(self, ip: str, now: float) -> bool:
        lease = self._leases.permissions.get(ip)
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
            transaction = self._requests.get(message.transaction_id)
            if transaction is None:
                return False  # someone else's transaction (e.g. the rendezvous client's)
            if (
                message.message_class is MessageClass.SUCCESS
                and transaction.key is not None
                and not message.check_integrity(transaction.key)
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
        for request in self._leases.tick(now):
            self._request(request, now)

    def get_timer(self) -> float | None:
        timers = [self._stun.get_timer()]
        if self.state is TurnState.ALLOCATED:
            timers += [self._refresh_at, self._expires_at, *self._leases.deadlines()]
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
        self, request: TurnRequest, now: float, *, retry_of: Transaction | None = None
    ) -> None:
        """Send ``request`` (``retry_of``: again, after an authentication challenge)."""
        full = list(request.attributes())
        if self.config.software is not None:
            full.append((AttrType.SOFTWARE, self.config.software))
        full += self._credentials.attributes()
        key = self._credentials.key
        message = StunMessage(
            request.method, MessageClass.REQUEST, new_transaction_id(self._rng), tuple(full)
        )
        data = message.encode(integrity_key=key, fingerprint=self.config.fingerprint)
        self._stun.send_encoded(message.transaction_id, data, self.config.server, now)
        if retry_of is None:
            transaction = Transaction(request, key, now)
        else:
            transaction = Transaction(request, key, retry_of.first_sent, retry_of.auth_tries + 1)
        self._requests[message.transaction_id] = transaction

    def _process_events(self, now: float) -> None:
        while (event := self._stun.next_event()) is not None:
            transaction = self._requests.pop(event.transaction_id, None)
            if transaction is None:
                continue
            if isinstance(event, TransactionTimedOut):
                self._on_failure(transaction, "no answer from the TURN server", None, now)
            else:
                self._on_response(transaction, event, now)

    def _on_response(self, transaction: Transaction, event: ResponseReceived, now: float) -> None:
        response = event.response
        error: ErrorCode | None = response.get(AttrType.ERROR_CODE)
        if response.message_class is MessageClass.ERROR:
            code = error.code if error is not None else None
            if transaction.auth_tries < self.config.max_auth_retries and self._credentials.learn(
                response, code, transaction.key
            ):
                # A new transaction with the new nonce; the lease/allocation stays pending.
                self._request(transaction.request, now, retry_of=transaction)
                return
            reason = error.reason if error is not None and error.reason else f"error {code}"
            self._on_failure(transaction, reason, code, now)
            return
        sent = transaction.first_sent
        match transaction.request:
            case AllocateRequest():
                self._on_allocated(sent, response)
            case RefreshRequest():
                self._set_allocation_lifetime(sent, response.get(AttrType.LIFETIME))
            case CloseRequest():
                self._closed()
            case PermissionRequest() | ChannelRequest() as lease_request:
                self._leases.granted(lease_request, sent)

    def _on_failure(
        self, transaction: Transaction, reason: str, code: int | None, now: float
    ) -> None:
        match transaction.request:
            case AllocateRequest():
                self.state = TurnState.FAILED
                self._events.append(AllocationFailed(reason, code))
            case RefreshRequest() as refresh:
                if code is None and self._expires_at is not None and now < self._expires_at:
                    self._request(refresh, now)  # still time: try again
                else:
                    self._lose(f"refresh failed: {reason}")
            case CloseRequest():
                self._closed()  # unanswered or refused: it expires on its own either way
            case PermissionRequest() | ChannelRequest() as lease_request:
                self._leases.refused(lease_request, reason, code, now)

    def _on_allocated(self, sent: float, response: StunMessage) -> None:
        relayed: Address | None = response.get(AttrType.XOR_RELAYED_ADDRESS)
        if relayed is None:
            self.state = TurnState.FAILED
            self._events.append(AllocationFailed("no XOR-RELAYED-ADDRESS in the answer", None))
            return
        self.relayed = relayed
        self.mapped = response.get(AttrType.XOR_MAPPED_ADDRESS)
        self.state = TurnState.ALLOCATED
        lifetime = self._set_allocation_lifetime(sent, response.get(AttrType.LIFETIME))
        self._events.append(Allocated(relayed, self.mapped, lifetime))

    def _set_allocation_lifetime(self, sent: float, granted: int | None) -> int:
        # Timed from the first send: the server started its timer no earlier than that.
        lifetime = self.config.lifetime if granted is None else granted
        self._expires_at = sent + lifetime
        self._refresh_at = sent + max(lifetime - self.config.refresh_margin, lifetime / 2)
        return lifetime

    # ------------------------------------------------------------------ data

    def _on_channel_data(self, data: bytes, now: float) -> bool:
        if self.state not in (TurnState.ALLOCATED, TurnState.CLOSING):
            return False
        decoded = decode_channel_data(data)
        channel = None if decoded is None else self._leases.by_number.get(decoded[0])
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
        for request in self._leases.touch(peer, now):
            self._request(request, now)

    # ------------------------------------------------------------------ lifecycle

    def _require_allocation(self) -> None:
        if self.state is not TurnState.ALLOCATED:
            raise LocalProtocolError("allocate first")

    def _lose(self, reason: str) -> None:
        self._cancel_all()
        self._clear_leases()
        # (No stale address: callers test ``relayed`` before asking for permissions.)
        self.relayed = self.mapped = None
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
        self._leases.clear()
        self._expires_at = self._refresh_at = None

    def _reset(self) -> None:
        self._cancel_all()
        self._clear_leases()
        self.relayed = self.mapped = None
