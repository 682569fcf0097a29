"""Loss detection and congestion control for one path (RFC 9002), sans-I/O.

Every packet sent is recorded with an opaque ``token`` (what it carried, for the
connection); acknowledgements and timers hand the tokens back as acknowledged or lost.
Packets are kept in a dict in packet-number order, so both an ACK (pop the numbers in its
ranges) and loss detection (scan from the oldest, stop at the first that is not lost) cost
in proportion to what changed, not to what is in flight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from peer.errors import LocalProtocolError
from peer.transport.congestion import CongestionKind, Pacer, make_congestion

__all__ = ["CongestionKind", "Recovery", "RecoveryConfig", "RttEstimator"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryConfig:
    max_datagram_size: int = 1200
    initial_rtt: float = 0.1  # before any sample (RFC 9002 says 333 ms for the internet;
    # our peers have just measured each other's round trip while punching: far less)
    max_ack_delay: float = 0.025
    packet_threshold: int = 3
    time_threshold: float = 9 / 8
    granularity: float = 0.001
    initial_window_packets: int = 10
    minimum_window_packets: int = 2
    persistent_congestion_threshold: int = 3
    congestion: CongestionKind = CongestionKind.CUBIC
    pacing: bool = True
    probes: int = 2  # packets sent when a probe timeout fires
    # Random loss is not congestion (wireless, a lossy relay hop): a loss reduces the
    # window only when the round trip shows a queue (the latest RTT above the minimum by
    # a quarter, and at least queue_delay), or when more than loss_tolerance of a round
    # trip's packets were lost. 0 and 0 make every loss count, as in RFC 9002.
    loss_tolerance: float = 0.1
    queue_delay: float = 0.004

    def __post_init__(self) -> None:
        if self.max_datagram_size < 200:
            raise LocalProtocolError("max_datagram_size must be at least 200")
        for name in ("initial_rtt", "time_threshold", "granularity"):
            if not getattr(self, name) > 0:
                raise LocalProtocolError(f"{name} must be positive")
        if not self.max_ack_delay >= 0:
            raise LocalProtocolError("max_ack_delay must be >= 0")
        for name in (
            "packet_threshold",
            "initial_window_packets",
            "minimum_window_packets",
            "persistent_congestion_threshold",
            "probes",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"{name} must be at least 1")


class RttEstimator:
    """RFC 9002 section 5: latest, minimum, smoothed RTT and its variation."""

    __slots__ = ("adjusted_rtt", "has_sample", "latest_rtt", "min_rtt", "rttvar", "smoothed_rtt")

    def __init__(self, initial_rtt: float) -> None:
        self.has_sample = False
        self.latest_rtt = 0.0
        self.adjusted_rtt = 0.0  # the latest less the peer's acknowledgement delay
        self.min_rtt = math.inf
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2

    def update(self, latest_rtt: float, ack_delay: float, max_ack_delay: float) -> None:
        self.latest_rtt = self.adjusted_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.min_rtt = self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        ack_delay = min(ack_delay, max_ack_delay)
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        self.adjusted_rtt = adjusted
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted


class _Sent:
    __slots__ = ("eliciting", "in_flight", "limited", "number", "size", "time", "token")

    def __init__(
        self,
        number: int,
        size: int,
        time: float,
        eliciting: bool,
        in_flight: bool,
        limited: bool,
        token: object,
    ) -> None:
        self.number = number
        self.size = size
        self.time = time
        self.eliciting = eliciting
        self.in_flight = in_flight
        self.limited = limited  # sent while the window, not the application, was the limit
        self.token = token


class Recovery:
    def __init__(self, config: RecoveryConfig | None = None) -> None:
        self.config = config = config or RecoveryConfig()
        mss = config.max_datagram_size
        self.rtt = RttEstimator(config.initial_rtt)
        self._cc = make_congestion(
            config.congestion,
            max_datagram_size=mss,
            initial_window=config.initial_window_packets * mss,
            minimum_window=config.minimum_window_packets * mss,
        )
        self._pacer = Pacer(max_datagram_size=mss, granularity=config.granularity)
        self._sent: dict[int, _Sent] = {}
        self.bytes_in_flight = 0
        self._eliciting_in_flight = 0
        self.largest_acked = -1
        self._loss_time: float | None = None
        self._last_eliciting_time = 0.0
        self.pto_count = 0
        self._first_sample_at: float | None = None  # (persistent congestion needs one)
        # Packets sent and lost in the current round trip (for the loss-rate signal).
        self._round_end = 0
        self._round_sent = 0
        self._previous_round_sent = 0  # (what is lost now was mostly sent then)
        self._round_lost = 0
        self._update_pacer()

    @property
    def congestion_window(self) -> int:
        return self._cc.congestion_window

    @property
    def ssthresh(self) -> float:
        return self._cc.ssthresh

    # ------------------------------------------------------------------ sending

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self._cc.congestion_window

    def send_time(self, now: float) -> float:
        if not self.config.pacing:
            return now
        return self._pacer.send_time(now)

    def on_packet_sent(
        self,
        number: int,
        size: int,
        now: float,
        *,
        ack_eliciting: bool,
        in_flight: bool,
        token: object,
    ) -> None:
        limited = False
        if in_flight:
            self.bytes_in_flight += size
            limited = 2 * self.bytes_in_flight >= self._cc.congestion_window
            self._pacer.on_packet_sent(size, now)
        if ack_eliciting:
            self._eliciting_in_flight += 1
            self._last_eliciting_time = now
        self._sent[number] = _Sent(number, size, now, ack_eliciting, in_flight, limited, token)
        self._round_sent += 1

    # ------------------------------------------------------------------ acknowledgements

    def on_ack_received(
        self, ranges: Sequence[tuple[int, int]], ack_delay: float, now: float
    ) -> tuple[list[object], list[object]]:
        sent = self._sent
        if not sent:
            return [], []
        oldest = next(iter(sent))
        acked: list[_Sent] = []
        pop = sent.pop
        for low, high in reversed(ranges):  # ascending, so that tokens come in order
            if high < oldest:
                continue
            for number in range(max(low, oldest), high + 1):
                packet = pop(number, None)
                if packet is not None:
                    acked.append(packet)
        if not acked:
            return [], []
        largest = ranges[0][1]
        newest = acked[-1]
        if largest > self.largest_acked:
            self.largest_acked = largest
            if largest >= self._round_end:  # a round trip is over: count afresh
                self._round_end = next(reversed(sent), largest) + 1
                self._previous_round_sent = self._round_sent
                self._round_sent = self._round_lost = 0
        if newest.number == largest and any(p.eliciting for p in acked):
            self.rtt.update(now - newest.time, ack_delay, self.config.max_ack_delay)
            if self._first_sample_at is None:
                self._first_sample_at = now
        cc = self._cc
        growth = 0
        for packet in acked:
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
                if packet.limited and not cc.in_recovery(packet.time):
                    growth += packet.size
            if packet.eliciting:
                self._eliciting_in_flight -= 1
        if growth:
            cc.on_packets_acked(growth, now, self.rtt.smoothed_rtt)
        self.pto_count = 0
        lost = self._detect_lost(now)
        self._update_pacer()
        return [p.token for p in acked], lost

    def _detect_lost(self, now: float) -> list[object]:
        config = self.config
        rtt = self.rtt
        loss_delay = max(
            config.time_threshold * max(rtt.latest_rtt, rtt.smoothed_rtt), config.granularity
        )
        largest, threshold = self.largest_acked, config.packet_threshold
        self._loss_time = None
        lost: list[_Sent] = []
        for number, packet in self._sent.items():
            if number > largest:
                break
            # (time + delay <= now, not time <= now - delay: the loss timer is set to
            # exactly time + delay, and must find the packet lost when it fires)
            if packet.time + loss_delay <= now or largest >= number + threshold:
                lost.append(packet)
            else:
                self._loss_time = packet.time + loss_delay
                break  # the later ones were sent later and are closer to the largest
        if not lost:
            return []
        sent = self._sent
        newest_lost_time = -math.inf
        first_lost_time = math.inf
        for packet in lost:
            del sent[packet.number]
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
            if packet.eliciting:
                self._eliciting_in_flight -= 1
                newest_lost_time = max(newest_lost_time, packet.time)
                first_lost_time = min(first_lost_time, packet.time)
        self._round_lost += len(lost)
        if newest_lost_time > -math.inf and self._congested():
            self._cc.on_congestion_event(newest_lost_time, now)
            if self._persistent(first_lost_time, newest_lost_time):
                self._cc.on_persistent_congestion()
        return [p.token for p in lost]

    def _congested(self) -> bool:
        """Do the losses just seen mean a full queue, rather than a lossy link?"""
        config, rtt = self.config, self.rtt
        if not rtt.has_sample:
            return True
        queue = rtt.adjusted_rtt - rtt.min_rtt
        if queue >= max(rtt.min_rtt / 4, config.queue_delay):
            return True
        sent = max(self._round_sent + self._previous_round_sent, 1)
        return self._round_lost > config.loss_tolerance * sent

    def _persistent(self, first: float, last: float) -> bool:
        """RFC 9002 7.6, simplified to one batch: the losses span longer than the
        persistent-congestion duration, all sent after the first RTT sample."""
        if self._first_sample_at is None or first < self._first_sample_at:
            return False
        rtt, config = self.rtt, self.config
        duration = (
            rtt.smoothed_rtt + max(4 * rtt.rttvar, config.granularity) + config.max_ack_delay
        ) * config.persistent_congestion_threshold
        return last - first > duration

    # ------------------------------------------------------------------ timers

    def _pto(self) -> float:
        rtt, config = self.rtt, self.config
        base = rtt.smoothed_rtt + max(4 * rtt.rttvar, config.granularity) + config.max_ack_delay
        return base * (1 << min(self.pto_count, 16))

    def get_timer(self) -> float | None:
        if self._loss_time is not None:
            return self._loss_time
        if not self._eliciting_in_flight:
            return None
        return self._last_eliciting_time + self._pto()

    def on_timer(self, now: float) -> tuple[list[object], int]:
        """(tokens now lost, probe packets to send now)."""
        if self._loss_time is not None and self._loss_time <= now:
            lost = self._detect_lost(now)
            self._update_pacer()
            return lost, 0
        if self._eliciting_in_flight and self._last_eliciting_time + self._pto() <= now:
            self.pto_count += 1
            return [], self.config.probes
        return [], 0

    def on_path_changed(self, now: float) -> list[object]:
        """A new path (RFC 9000 9.4): start over, and call everything in flight lost."""
        tokens = [p.token for p in self._sent.values()]
        self._sent.clear()
        self.bytes_in_flight = self._eliciting_in_flight = 0
        self._loss_time = None
        self.pto_count = 0
        self.rtt = RttEstimator(self.config.initial_rtt)
        self._first_sample_at = None
        self._cc.reset()
        self._update_pacer()
        self._pacer.reset()
        return tokens

    def discard(self) -> None:
        self._sent.clear()
        self.bytes_in_flight = self._eliciting_in_flight = 0
        self._loss_time = None

    def _update_pacer(self) -> None:
        self._pacer.update_rate(self._cc.congestion_window, self.rtt.smoothed_rtt)
