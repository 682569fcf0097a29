"""Loss detection and congestion control for one path (RFC 9002), sans-I/O.

Every packet sent is recorded with an opaque ``token`` (what it carried, for the
connection); acknowledgements and timers hand the tokens back as acknowledged or lost.
Packets are kept in a dict in packet-number order, so both an ACK (pop the numbers in its
ranges, clamped to what is in flight) and loss detection (scan from the oldest, stop at
the first that is not lost) cost in proportion to what changed, not to what is in flight.

Because loss detection only ever removes a prefix of that dict, a packet number missing
between two packets declared lost was acknowledged: that is how persistent congestion
(RFC 9002 7.6: no acknowledgement between two losses far apart) is told in O(lost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from peer.errors import LocalProtocolError
from peer.transport.congestion import CongestionKind, Pacer, make_congestion
from peer.transport.recovery_config import RecoveryConfig

__all__ = ["CongestionKind", "Recovery", "RecoveryConfig", "RttEstimator"]

_LOSS_SAMPLE_PACKETS = 32  # fewer packets say little about the loss rate
_MOST_USUAL_LOSS = 0.5  # past this, loss is congestion whatever the path did before


class RttEstimator:
    """RFC 9002 section 5: latest, minimum, smoothed RTT and its variation."""

    __slots__ = ("adjusted_rtt", "has_sample", "latest_rtt", "min_rtt", "rttvar", "smoothed_rtt")

    def __init__(self, initial_rtt: float = 0.1) -> None:
        self.has_sample = False
        self.latest_rtt = 0.0
        self.adjusted_rtt = 0.0  # the latest less the peer's acknowledgement delay
        self.min_rtt = math.inf
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2

    def update(self, latest_rtt: float, ack_delay: float, max_ack_delay: float) -> None:
        self.latest_rtt = self.adjusted_rtt = latest_rtt
        if not self.has_sample:  # (the first sample ignores the peer's delay: 5.3)
            self.has_sample = True
            self.min_rtt = self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        # The peer may not claim more delay than it promised; min_rtt never includes any.
        ack_delay = min(max(ack_delay, 0.0), max_ack_delay)
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
        self.rtt = RttEstimator(config.initial_rtt)
        self._cc = make_congestion(config.congestion, config)
        self._pacer = Pacer(
            max_datagram_size=config.max_datagram_size,
            granularity=config.granularity,
            burst=config.initial_window_packets * config.max_datagram_size,
        )
        self._sent: dict[int, _Sent] = {}
        self.bytes_in_flight = 0
        self._eliciting_in_flight = 0
        self.largest_sent = -1
        self.largest_acked = -1
        self._loss_time: float | None = None
        self._last_eliciting_time = 0.0
        self.pto_count = 0
        self._first_sample_at: float | None = None  # (persistent congestion needs one)
        # How long the peer may hold an ACK back: our configured promise, until an
        # ACK_FREQUENCY request for less is acknowledged (the connection sets it).
        self.peer_ack_delay = config.max_ack_delay
        self._reset_loss_counts()
        self._update_pacer()

    def _reset_loss_counts(self) -> None:
        # Packets sent and lost in the current round trip (for the loss-rate signal).
        self._round_end = 0
        self._round_sent = 0
        self._previous_round_sent = 0  # (what is lost now was mostly sent then)
        self._round_lost = 0
        # The smallest RTT sample of this round trip: a queue raises every sample of a
        # round trip, a busy event loop or a delayed ACK only some.
        self._round_min_rtt = math.inf
        self._sample_sent = self._sample_lost = 0  # round trips not yet folded in
        self._sample_queued = False
        self.loss_rate = 0.0  # the moving average of the rounds' loss rates
        # The current run of consecutive packet numbers declared lost (persistent
        # congestion): the send time of its first ack-eliciting packet sent after the
        # first RTT sample, and the number that would continue it.
        self._run_start: float | None = None
        self._run_next = -1

    @property
    def congestion_window(self) -> int:
        return self._cc.congestion_window

    @property
    def ssthresh(self) -> float:
        return self._cc.ssthresh

    @property
    def in_css(self) -> bool:
        """Slow start slowed by HyStart++: the round trip grew as a queue formed."""
        return self._cc.in_css

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
        if number <= self.largest_sent:
            raise LocalProtocolError(f"packet number {number} not above {self.largest_sent}")
        self.largest_sent = number
        limited = False
        if in_flight:
            self.bytes_in_flight += size
            # Window-limited (Linux's tcp_is_cwnd_limited, simplified): at least half the
            # window in flight, this packet included. Only such packets' acknowledgements
            # grow the window: an application sending little never proved a larger one.
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
        """``ranges``: inclusive (low, high), largest first. (tokens acked, tokens lost)."""
        sent = self._sent
        if not sent or not ranges:
            return [], []
        oldest, newest = next(iter(sent)), self.largest_sent
        acked: list[_Sent] = []
        pop = sent.pop
        for low, high in reversed(ranges):  # ascending, so that tokens come in order
            if high < oldest:
                continue
            if low > newest:
                break  # (numbers never sent: ignored, as duplicates are)
            for number in range(max(low, oldest), min(high, newest) + 1):
                packet = pop(number, None)
                if packet is not None:
                    acked.append(packet)
        if not acked:
            return [], []
        largest = min(ranges[0][1], newest)
        if largest > self.largest_acked:
            self.largest_acked = largest
            if largest >= self._round_end:  # a round trip is over: count afresh
                self._round_end = newest + 1
                self._learn_loss_rate()
                self._round_min_rtt = math.inf
                self._previous_round_sent = self._round_sent
                self._round_sent = self._round_lost = 0
                self._cc.on_round_start()
        cc = self._cc
        recovery_start = cc.recovery_start
        growth = freed = eliciting = 0
        for packet in acked:
            if packet.in_flight:
                freed += packet.size
                if packet.limited and packet.time > recovery_start:
                    growth += packet.size
            if packet.eliciting:
                eliciting += 1
        self.bytes_in_flight -= freed
        self._eliciting_in_flight -= eliciting
        # An RTT sample (5.1): the largest acknowledged is new, and something acked was
        # ack-eliciting (else the peer may have held the ACK back as long as it liked).
        last = acked[-1]
        if last.number == largest and eliciting:
            rtt = self.rtt
            rtt.update(now - last.time, ack_delay, self.peer_ack_delay)
            if rtt.adjusted_rtt < self._round_min_rtt:
                self._round_min_rtt = rtt.adjusted_rtt
            cc.on_rtt_sample(rtt.latest_rtt)
            if self._first_sample_at is None:
                self._first_sample_at = now
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
        self._on_lost(lost, now)
        return [p.token for p in lost]

    def _on_lost(self, lost: list[_Sent], now: float) -> None:
        sent = self._sent
        newest_lost_time = -math.inf
        persistent = False
        first_sample_at = self._first_sample_at
        duration = self._persistent_duration()
        run_start, run_next = self._run_start, self._run_next
        for packet in lost:
            number = packet.number
            del sent[number]
            if number != run_next:  # a gap: that packet was acknowledged
                run_start = None
            run_next = number + 1
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
                newest_lost_time = packet.time
            if packet.eliciting:
                self._eliciting_in_flight -= 1
                if first_sample_at is not None and packet.time >= first_sample_at:
                    if run_start is None:
                        run_start = packet.time
                    elif packet.time - run_start > duration:
                        persistent = True
        self._run_start, self._run_next = run_start, run_next
        self._round_lost += len(lost)
        if newest_lost_time > -math.inf and self._congested():
            self._cc.on_congestion_event(newest_lost_time, now)
        if persistent:
            self._cc.on_persistent_congestion()
            self._run_start = None  # (collapsed once for this run)

    def _learn_loss_rate(self) -> None:
        """At the end of a round trip: add its packets and losses to the current sample;
        once the sample holds _LOSS_SAMPLE_PACKETS (a short path's round trip may be a
        handful), fold its loss rate into the path's usual one, unless one of its round
        trips showed a queue (every RTT sample above the minimum by a round trip, or the
        timer granularity on the fastest paths): losses a queue causes never become
        usual."""
        rtt = self.rtt
        if self._round_min_rtt - rtt.min_rtt >= max(rtt.min_rtt, self.config.granularity):
            self._sample_queued = True
        self._sample_sent += self._previous_round_sent
        self._sample_lost += self._round_lost
        if self._sample_sent < _LOSS_SAMPLE_PACKETS:
            return
        if not self._sample_queued:
            rate = min(self._sample_lost / self._sample_sent, 1.0)
            self.loss_rate += (rate - self.loss_rate) / 8
        self._sample_sent = self._sample_lost = 0
        self._sample_queued = False

    def _congested(self) -> bool:
        """Do the losses just seen mean a full queue, rather than a lossy link?"""
        config, rtt = self.config, self.rtt
        if not rtt.has_sample or not config.loss_tolerance:
            return True
        # (The smoothed RTT too: a queue raises both, one late sample, a busy event loop
        # on either side, only the latest.)
        queue = min(rtt.adjusted_rtt, rtt.smoothed_rtt) - rtt.min_rtt
        if queue >= max(rtt.min_rtt / 4, config.queue_delay):
            return True
        lost = self._round_lost
        if lost < config.loss_min_packets:
            return False
        # (A floor, so that a few losses of a small window are not read as a rate.)
        sent = max(self._round_sent + self._previous_round_sent, _LOSS_SAMPLE_PACKETS)
        usual = min(2 * self.loss_rate, _MOST_USUAL_LOSS)
        return lost > max(config.loss_tolerance, usual) * sent

    def _persistent_duration(self) -> float:
        """RFC 9002 7.6.1: losses spanning longer than this, none acknowledged between."""
        return self._pto_base() * self.config.persistent_congestion_threshold

    # ------------------------------------------------------------------ timers

    def _pto_base(self) -> float:
        rtt, config = self.rtt, self.config
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, config.granularity) + self.peer_ack_delay

    def pto_deadline(self) -> float | None:
        """When the probe timeout fires (6.2.1), doubling with each unanswered one, up to
        max_pto_interval (or one base timeout, if that is longer)."""
        if not self._eliciting_in_flight:
            return None
        base = self._pto_base()
        interval = min(
            base * (1 << min(self.pto_count, 16)), max(base, self.config.max_pto_interval)
        )
        return self._last_eliciting_time + interval

    def get_timer(self) -> float | None:
        if self._loss_time is not None:
            return self._loss_time
        return self.pto_deadline()

    def on_timer(self, now: float) -> tuple[list[object], int]:
        """(tokens now lost, probe packets to send now). Early calls change nothing."""
        if self._loss_time is not None:
            if self._loss_time > now:
                return [], 0
            lost = self._detect_lost(now)
            self._update_pacer()
            return lost, 0
        deadline = self.pto_deadline()
        if deadline is not None and deadline <= now:
            self.pto_count += 1
            return [], self.config.probes
        return [], 0

    def on_path_changed(self, now: float) -> list[object]:
        """A new path (RFC 9000 9.4): start over, and call everything in flight lost."""
        tokens = [p.token for p in self._sent.values()]
        self.discard()
        self.rtt = RttEstimator(self.config.initial_rtt)
        self._first_sample_at = None
        self._cc.reset()
        self._update_pacer()
        self._pacer.reset()
        return tokens

    def discard(self) -> None:
        """Forget every packet (the connection closed): no timer from here on."""
        self._sent.clear()
        self.bytes_in_flight = self._eliciting_in_flight = 0
        self._loss_time = None
        self.pto_count = 0
        self._reset_loss_counts()

    def _update_pacer(self) -> None:
        self._pacer.update_rate(self._cc.congestion_window, self.rtt.smoothed_rtt)
