"""Sans-I/O STUN client transactions with RFC 8489 retransmission.

Feed it datagrams and timer ticks with the current time; drain what to send and the events
that happened. It never reads a clock or touches a socket, so every schedule is testable.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from stunproto.attributes import STUN_CODECS, Address, Codecs
from stunproto.errors import StunDecodeError
from stunproto.message import MessageClass, StunMessage, is_stun


@dataclass(frozen=True, slots=True, kw_only=True)
class RetransmitPolicy:
    """RFC 8489 section 6.2.1: send at 0, RTO, 3 RTO, ... (doubling), ``max_sends`` (Rc)
    times, then wait ``final_wait`` (Rm) times the initial RTO. ``rto_max`` caps the
    doubling, which the RFC does not do but which bounds the time to declare a test
    unanswered when many sends are wanted to tell loss from filtering."""

    rto: float = 0.5
    max_sends: int = 7
    final_wait: float = 16.0
    rto_max: float | None = None

    def __post_init__(self) -> None:
        if self.rto <= 0 or self.max_sends < 1 or self.final_wait < 0:
            raise ValueError("rto and final_wait must be positive, max_sends at least 1")

    def total_time(self) -> float:
        """Time from the first send until the transaction gives up."""
        elapsed, interval = 0.0, self.rto
        for _ in range(self.max_sends - 1):
            elapsed += interval
            interval = self._next(interval)
        return elapsed + self.final_wait * self.rto

    def _next(self, interval: float) -> float:
        doubled = interval * 2
        return doubled if self.rto_max is None else min(doubled, self.rto_max)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    transaction_id: bytes
    response: StunMessage
    source: Address
    # Round-trip time measured from the first send; ``sends`` tells whether it is
    # ambiguous (Karn's rule: only trust it when sends == 1).
    rtt: float
    sends: int


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    transaction_id: bytes
    destination: Address
    sends: int


Event = ResponseReceived | TransactionTimedOut


@dataclass(slots=True)
class _Transaction:
    data: bytes
    destination: Address
    policy: RetransmitPolicy
    started: float
    next_at: float
    interval: float
    sends: int = 0


class StunClient:
    """Tracks outstanding requests by transaction id on one socket."""

    def __init__(
        self, *, policy: RetransmitPolicy | None = None, codecs: Codecs = STUN_CODECS
    ) -> None:
        self._policy = policy or RetransmitPolicy()
        self._codecs = codecs  # the attribute table responses are decoded with
        self._pending: dict[bytes, _Transaction] = {}
        self._timers: list[tuple[float, bytes]] = []
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()

    def send_request(
        self,
        request: StunMessage,
        destination: Address,
        now: float,
        *,
        policy: RetransmitPolicy | None = None,
        integrity_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """Start a transaction; the first send is queued at once. Returns its id."""
        if request.message_class is not MessageClass.REQUEST:
            raise ValueError("only requests start transactions")
        data = request.encode(integrity_key=integrity_key, fingerprint=fingerprint)
        return self.send_encoded(request.transaction_id, data, destination, now, policy=policy)

    def send_encoded(
        self,
        transaction_id: bytes,
        data: bytes,
        destination: Address,
        now: float,
        *,
        policy: RetransmitPolicy | None = None,
    ) -> bytes:
        """Start a transaction for an already encoded request (e.g. one with a signature
        computed over its bytes); ``transaction_id`` must be the one inside ``data``."""
        if transaction_id in self._pending:
            raise ValueError("transaction id already in use")
        chosen = policy or self._policy
        tx = _Transaction(data, destination, chosen, now, now, chosen.rto)
        self._pending[transaction_id] = tx
        self._fire(transaction_id, tx, now)
        return transaction_id

    def cancel(self, transaction_id: bytes) -> None:
        self._pending.pop(transaction_id, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> bool:
        """Returns True if the datagram answered one of our transactions (it is consumed);
        False leaves it to the caller (e.g. an incoming request, or application data)."""
        if not is_stun(data):
            return False
        try:
            message = StunMessage.parse(data, self._codecs)
        except StunDecodeError:
            return False
        if message.message_class not in (MessageClass.SUCCESS, MessageClass.ERROR):
            return False
        tx = self._pending.pop(message.transaction_id, None)
        if tx is None:
            return False
        self._events.append(
            ResponseReceived(message.transaction_id, message, source, now - tx.started, tx.sends)
        )
        return True

    def get_timer(self) -> float | None:
        while self._timers and self._stale(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            at, transaction_id = heapq.heappop(self._timers)
            tx = self._pending.get(transaction_id)
            if tx is None or tx.next_at != at:
                continue
            if tx.sends >= tx.policy.max_sends:
                del self._pending[transaction_id]
                self._events.append(TransactionTimedOut(transaction_id, tx.destination, tx.sends))
            else:
                self._fire(transaction_id, tx, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _fire(self, transaction_id: bytes, tx: _Transaction, now: float) -> None:
        self._outbox.append((tx.data, tx.destination))
        tx.sends += 1
        if tx.sends >= tx.policy.max_sends:
            tx.next_at = now + tx.policy.final_wait * tx.policy.rto
        else:
            tx.next_at = now + tx.interval
            tx.interval = tx.policy._next(tx.interval)
        heapq.heappush(self._timers, (tx.next_at, transaction_id))

    def _stale(self, entry: tuple[float, bytes]) -> bool:
        tx = self._pending.get(entry[1])
        return tx is None or tx.next_at != entry[0]
