"""Reliable, ordered, duplicate-free message delivery over an unreliable datagram path.

Sans-I/O: the session hands it frames that arrived and asks it for frames to send. Each
message gets a sequence number; the receiver acknowledges cumulatively (next expected) and
delivers in order from a bounded reorder buffer; the sender retransmits what is not
acknowledged with an RTO derived from measured round trips (RFC 6298, Karn's rule).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from peer.frames import Ack, Data

WINDOW = 1024  # messages in flight / buffered out of order


@dataclass(frozen=True, slots=True, kw_only=True)
class ReliabilityConfig:
    initial_rto: float = 0.25
    min_rto: float = 0.05
    max_rto: float = 2.0


@dataclass(slots=True)
class _Unacked:
    payload: bytes
    first_sent: float
    sent_at: float
    retransmitted: bool = False


class ReliableStream:
    def __init__(self, config: ReliabilityConfig | None = None) -> None:
        self.config = config or ReliabilityConfig()
        self._next_seq = 0
        self._queue: deque[bytes] = deque()  # waiting for window space
        self._unacked: dict[int, _Unacked] = {}
        self._expected = 0  # next sequence number to deliver
        self._reorder: dict[int, bytes] = {}
        self._delivered: deque[bytes] = deque()
        self._ack_due = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = self.config.initial_rto

    # ------------------------------------------------------------------ sending side

    def send(self, payload: bytes) -> None:
        self._queue.append(payload)

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged by the other side."""
        return len(self._queue) + len(self._unacked)

    def frames_to_send(self, now: float) -> list[Data | Ack]:
        frames: list[Data | Ack] = []
        if self._ack_due:
            frames.append(Ack(self._expected))
            self._ack_due = False
        retransmitted = False
        for seq, item in self._unacked.items():
            # The same sum get_timer() reports: a difference could round below the RTO and
            # leave a timer that fires forever without anything being due.
            if item.sent_at + self.rto <= now:
                item.sent_at = now
                item.retransmitted = retransmitted = True
                frames.append(Data(seq, item.payload))
        if retransmitted:
            self.back_off()
        while self._queue and len(self._unacked) < WINDOW:
            seq = self._next_seq
            self._next_seq += 1
            payload = self._queue.popleft()
            self._unacked[seq] = _Unacked(payload, now, now)
            frames.append(Data(seq, payload))
        return frames

    def get_timer(self) -> float | None:
        if self._ack_due or (self._queue and len(self._unacked) < WINDOW):
            return 0.0  # something to send right away
        if not self._unacked:
            return None
        return min(item.sent_at for item in self._unacked.values()) + self.rto

    def oldest_unacked(self) -> float | None:
        """When the oldest unacknowledged message was first sent (a stalled path shows)."""
        return min((item.first_sent for item in self._unacked.values()), default=None)

    def expedite(self, now: float) -> None:
        """The path changed: resend everything unacknowledged at once, with a fresh RTO,
        and judge the new path from now on (``oldest_unacked`` restarts)."""
        self.rto = self._computed_rto()
        for item in self._unacked.values():
            item.sent_at = now - self.rto
            item.first_sent = now
            item.retransmitted = True  # Karn: no RTT sample from these

    def on_ack(self, ack: Ack, now: float) -> None:
        acked = [seq for seq in self._unacked if seq < ack.next_expected]
        for seq in acked:
            item = self._unacked.pop(seq)
            if not item.retransmitted:
                self._sample(now - item.first_sent)
        if acked:
            # Fresh progress: retransmissions of the rest can wait a new full RTO.
            self.rto = self._computed_rto()

    def _sample(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def _computed_rto(self) -> float:
        if self._srtt is None:
            return self.config.initial_rto
        rto = self._srtt + max(4 * self._rttvar, 0.01)
        return min(max(rto, self.config.min_rto), self.config.max_rto)

    def back_off(self) -> None:
        """Called when a retransmission timer fired: double the RTO (RFC 6298 5.5)."""
        self.rto = min(self.rto * 2, self.config.max_rto)

    # ------------------------------------------------------------------ receiving side

    def on_data(self, data: Data) -> None:
        self._ack_due = True  # acknowledge every data frame, duplicates included
        if data.seq < self._expected or data.seq >= self._expected + WINDOW:
            return
        self._reorder[data.seq] = data.payload
        while self._expected in self._reorder:
            self._delivered.append(self._reorder.pop(self._expected))
            self._expected += 1

    def next_delivery(self) -> bytes | None:
        return self._delivered.popleft() if self._delivered else None
