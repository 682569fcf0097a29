"""Congestion control: NewReno (RFC 9002 7.3) and CUBIC (RFC 9438) behind one interface,
and the pacer that spreads a window's packets over a round trip (RFC 9002 7.7).

Windows are in bytes. The loss detector (peer.transport.recovery) decides which
acknowledged bytes may grow the window (sent after the current recovery period began, and
while the window, not the application, was the limit) and calls ``on_packets_acked`` with
them; it calls ``on_congestion_event`` with the send time of the newest lost packet, and
``on_persistent_congestion`` after a whole stretch of packets was lost (RFC 9002 7.6).
It also hands over every RTT sample (``on_rtt_sample``) and says when a round trip begins
(``on_round_start``: the first acknowledgement of a packet sent after the previous round
began), for HyStart++ (RFC 9406): the first slow start ends when the round trip grows, as
a queue forms, rather than a round trip after the queue overflowed with twice the window
the path holds.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Protocol

__all__ = [
    "CongestionController",
    "CongestionKind",
    "Cubic",
    "NewReno",
    "Pacer",
    "WindowSizes",
    "make_congestion",
]


class CongestionKind(StrEnum):
    RENO = "reno"
    CUBIC = "cubic"


class WindowSizes(Protocol):
    """What a controller needs of a configuration (``RecoveryConfig`` has it; a Protocol
    because recovery imports this module, not the other way round)."""

    @property
    def max_datagram_size(self) -> int: ...
    @property
    def initial_window_packets(self) -> int: ...
    @property
    def minimum_window_packets(self) -> int: ...


class CongestionController:
    """What both algorithms share: slow start, the recovery period (one reduction per
    round trip) and the collapse on persistent congestion. Subclasses say how the window
    grows in congestion avoidance (``_avoid``) and how far a loss cuts it (``_reduce``)."""

    __slots__ = (
        "_above",
        "_css_baseline",
        "_css_rounds",
        "_initial_window",
        "_last_round_min_rtt",
        "_mss",
        "_round_min_rtt",
        "_round_samples",
        "congestion_window",
        "minimum_window",
        "recovery_start",
        "ssthresh",
    )
    beta = 0.5  # the window kept on a loss (RFC 9002 kLossReductionFactor)
    # HyStart++ (RFC 9406 4.3, its recommended values).
    MIN_RTT_THRESH = 0.004
    MAX_RTT_THRESH = 0.016
    MIN_RTT_DIVISOR = 8
    N_RTT_SAMPLE = 8
    CSS_GROWTH_DIVISOR = 4
    CSS_ROUNDS = 5

    def __init__(self, *, max_datagram_size: int, initial_window: int, minimum_window: int) -> None:
        self._mss = max_datagram_size
        self._initial_window = initial_window
        self.minimum_window = minimum_window
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (a new path, RFC 9000 9.4)."""
        self.congestion_window = self._initial_window
        self.ssthresh: float = math.inf
        self.recovery_start = -math.inf
        self._round_min_rtt = self._last_round_min_rtt = math.inf
        self._round_samples = 0
        self._above = 0  # consecutive samples over the threshold
        self._css_baseline = math.inf  # finite: in conservative slow start (CSS)
        self._css_rounds = 0

    @property
    def in_css(self) -> bool:
        """In HyStart++'s conservative slow start: the round trip grew, growth is slower."""
        return self._css_baseline < math.inf

    def on_round_start(self) -> None:
        """A round trip begins (HyStart++ keeps one minimum RTT per round)."""
        if self.ssthresh < math.inf:
            return  # (only the first slow start: after a loss the path's size is known)
        self._last_round_min_rtt = self._round_min_rtt
        self._round_min_rtt = math.inf
        self._round_samples = 0
        if self._css_baseline < math.inf:
            self._css_rounds += 1  # (a partial first round counts, RFC 9406 4.3)
            if self._css_rounds >= self.CSS_ROUNDS:
                self.ssthresh = self.congestion_window  # on to congestion avoidance
                self._css_baseline = math.inf

    def on_rtt_sample(self, latest_rtt: float) -> None:
        """HyStart++ (RFC 9406 4.2): leave slow start for CSS once ``N_RTT_SAMPLE``
        samples in a row are above the last round's minimum by an eighth of it (4 to
        16 ms); go back to slow start if a round's minimum falls below where CSS began.

        RFC 9406 compares the minimum of the current round so far instead, which holds
        the round's first samples, taken before the queue grew: doubling then overflows a
        queue of one bandwidth-delay product a round before the minimum moves. Samples in
        a row (all of them over) see a standing queue as soon as it has formed, and are
        still deaf to a burst's."""
        if self.ssthresh < math.inf:
            return
        if latest_rtt < self._round_min_rtt:
            self._round_min_rtt = latest_rtt
        self._round_samples += 1
        if self._css_baseline < math.inf:
            if (
                self._round_samples >= self.N_RTT_SAMPLE
                and self._round_min_rtt < self._css_baseline
            ):  # the exit was spurious: slow start again
                self._css_baseline = math.inf
                self._css_rounds = self._above = 0
            return
        last = self._last_round_min_rtt
        threshold = min(max(last / self.MIN_RTT_DIVISOR, self.MIN_RTT_THRESH), self.MAX_RTT_THRESH)
        if latest_rtt < last + threshold:  # (never, before a whole round)
            self._above = 0
            return
        self._above += 1
        if self._above >= self.N_RTT_SAMPLE:
            # Back to slow start only if the minimum of N_RTT_SAMPLE samples or more from
            # here on, within a round, is under the line again (the round's earlier samples
            # came before the queue: they no longer count).
            self._css_baseline = last + threshold
            self._round_min_rtt = math.inf
            self._css_rounds = self._round_samples = 0

    def in_recovery(self, sent_time: float) -> bool:
        """Was a packet sent at ``sent_time`` sent before the current recovery period began?
        (Its acknowledgement does not grow the window; its loss does not cut it again.)"""
        return sent_time <= self.recovery_start

    def on_packets_acked(self, acked_bytes: int, now: float, rtt: float) -> None:
        """``acked_bytes`` acknowledged that may grow the window; ``rtt`` the smoothed RTT."""
        if self.congestion_window < self.ssthresh:
            if self._css_baseline < math.inf:
                acked_bytes //= self.CSS_GROWTH_DIVISOR  # CSS: a quarter as fast
            self.congestion_window += acked_bytes  # slow start: doubles per round trip
        else:
            self._avoid(acked_bytes, now, rtt)

    def on_congestion_event(self, sent_time: float, now: float) -> None:
        """A loss of a packet sent at ``sent_time``: cut the window, once per round trip."""
        if sent_time <= self.recovery_start:
            return  # sent before the last reduction: that one already answered it
        self.recovery_start = now
        self._reduce(now)

    def on_persistent_congestion(self) -> None:
        self.congestion_window = self.minimum_window
        self.recovery_start = -math.inf  # the next loss may cut again at once
        self._css_baseline = math.inf

    def _reduce(self, now: float) -> None:
        window = max(int(self.congestion_window * self.beta), self.minimum_window)
        self.congestion_window = window
        self.ssthresh = window
        self._css_baseline = math.inf

    def _avoid(self, acked_bytes: int, now: float, rtt: float) -> None:
        raise NotImplementedError


class NewReno(CongestionController):
    """RFC 9002 7.3: one datagram more per window of acknowledged bytes; halve on loss."""

    __slots__ = ("_acked_in_avoidance",)

    def reset(self) -> None:
        super().reset()
        self._acked_in_avoidance = 0

    def _reduce(self, now: float) -> None:
        super()._reduce(now)
        self._acked_in_avoidance = 0

    def _avoid(self, acked_bytes: int, now: float, rtt: float) -> None:
        self._acked_in_avoidance += acked_bytes
        if self._acked_in_avoidance >= self.congestion_window:
            self._acked_in_avoidance -= self.congestion_window
            self.congestion_window += self._mss


class Cubic(CongestionController):
    """CUBIC (RFC 9438). After a loss the window follows W_cubic(t) = C (t - K)^3 + W_max
    (in datagrams, t seconds into the congestion-avoidance stage): concave up to the old
    maximum, then convex beyond it; never below W_est, what Reno would have reached (the
    Reno-friendly region, 4.3). A loss below the previous maximum lowers W_max further, so
    that a newcomer gets its share (fast convergence, 4.7)."""

    __slots__ = ("_cwnd_prior", "_epoch_start", "_fraction", "_k", "_w_est", "_w_max")
    beta = 0.7
    c = 0.4

    def reset(self) -> None:
        super().reset()
        self._epoch_start: float | None = None  # when the current stage began
        self._w_max = 0.0  # datagrams, as are the next three
        self._k = 0.0
        self._w_est = 0.0
        self._cwnd_prior = 0.0  # the window before the last reduction
        self._fraction = 0.0  # growth in bytes not yet added (the window is whole bytes)

    @property
    def k(self) -> float:
        """Seconds from the stage's start until W_cubic is back at W_max."""
        return self._k

    @property
    def w_max(self) -> float:
        return self._w_max

    def w_cubic(self, t: float) -> float:
        """The window (in datagrams) t seconds into the current stage."""
        return self.c * (t - self._k) ** 3 + self._w_max

    def _reduce(self, now: float) -> None:
        window = self.congestion_window / self._mss
        # (Fast convergence compares with the W_max of the previous reduction.)
        self._w_max = window * (1 + self.beta) / 2 if window < self._w_max else window
        self._cwnd_prior = window
        super()._reduce(now)
        epoch_window = self.congestion_window / self._mss
        self._k = math.cbrt(max(self._w_max - epoch_window, 0.0) / self.c)
        self._w_est = epoch_window
        # The stage starts when recovery ends: at the first acknowledgement that may grow
        # the window (of a packet sent after this reduction), as Linux does.
        self._epoch_start = None
        self._fraction = 0.0

    def on_persistent_congestion(self) -> None:
        super().on_persistent_congestion()
        # RFC 9438 4.8: the next stage starts afresh, K = 0 and W_max the window then.
        self._epoch_start = None
        self._w_max = self._k = self._w_est = self._cwnd_prior = 0.0

    def _avoid(self, acked_bytes: int, now: float, rtt: float) -> None:
        mss = self._mss
        window = self.congestion_window / mss
        if self._epoch_start is None:
            self._epoch_start = now
            if self._w_max == 0.0:  # no loss behind this stage (after a timeout, 4.8)
                self._w_max = self._w_est = window
                self._k = 0.0
        acked = acked_bytes / mss
        # Reno's additive increase with CUBIC's beta (4.3), at Reno's own rate once past
        # the window before the reduction.
        alpha = 1.0 if self._w_est >= self._cwnd_prior else 3 * (1 - self.beta) / (1 + self.beta)
        self._w_est += alpha * acked / window
        t = now - self._epoch_start
        if self.w_cubic(t) < self._w_est:
            target = self._w_est
            growth = (target - window) * mss  # (may be negative: then no change)
        else:
            # Concave and convex regions (4.4, 4.5): toward W_cubic one RTT ahead, between
            # no growth and half a window more per round trip.
            target = min(max(self.w_cubic(t + rtt), window), 1.5 * window)
            growth = (target - window) / window * acked * mss
        if growth > 0:
            self._fraction += growth
            whole = int(self._fraction)
            self.congestion_window += whole
            self._fraction -= whole


def make_congestion(kind: CongestionKind, config: WindowSizes) -> CongestionController:
    cls: type[CongestionController] = Cubic if kind is CongestionKind.CUBIC else NewReno
    mss = config.max_datagram_size
    return cls(
        max_datagram_size=mss,
        initial_window=config.initial_window_packets * mss,
        minimum_window=config.minimum_window_packets * mss,
    )


class Pacer:
    """A token bucket filled at 1.25 x window / smoothed RTT (RFC 9002 7.7). Sending may
    run ahead of it by a burst of ``burst`` bytes (RFC 9002 7.7: the initial window, ten
    datagrams), and by ``granularity``: an event loop cannot wake every few microseconds.

    (Not by a fraction of the window: after a stall, flow control's say, a quarter window
    at once is a queue of a quarter round trip at the bottleneck, which the loss detector
    would take for congestion.)"""

    __slots__ = ("_budget", "_capacity", "_granularity", "_last", "_mss", "rate")

    def __init__(
        self, *, max_datagram_size: int, granularity: float, burst: int | None = None
    ) -> None:
        self._mss = max_datagram_size
        self._granularity = granularity
        self.rate = math.inf  # bytes per second
        self._budget = 0.0
        self._capacity = float(10 * max_datagram_size if burst is None else burst)
        self._last = -math.inf

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        self.rate = 1.25 * congestion_window / max(smoothed_rtt, 1e-6)

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._budget = min(self._capacity, self._budget + (now - self._last) * self.rate)
            self._last = now

    def send_time(self, now: float) -> float:
        """The earliest time a full-size packet may go (``now`` if it may go now)."""
        self._refill(now)
        deficit = self._mss - self._budget
        if deficit <= 0:
            return now
        wait = deficit / self.rate
        # (Wake half a granularity early: at the wake-up the wait is then surely short enough.)
        return now if wait <= self._granularity else now + wait - self._granularity / 2

    def on_packet_sent(self, size: int, now: float) -> None:
        self._refill(now)
        self._budget -= size

    def reset(self) -> None:
        self._budget = self._capacity
        self._last = -math.inf
