"""Congestion control: NewReno (RFC 9002 7.3) and CUBIC (RFC 9438) behind one interface,
and the pacer that spreads a window's packets over a round trip (RFC 9002 7.7).

Windows are in bytes. The loss detector (peer.transport.recovery) calls
``on_packets_acked`` with the bytes acknowledged that may grow the window (sent after the
current recovery period began, while the sender was limited by the window, not by the
application) and ``on_congestion_event`` with the send time of the newest lost packet.
"""

from __future__ import annotations

import math
from enum import StrEnum


class CongestionKind(StrEnum):
    RENO = "reno"
    CUBIC = "cubic"


class CongestionController:
    """NewReno: slow start, then one datagram per window of acknowledged bytes; halve on
    loss, once per recovery period."""

    __slots__ = (
        "_acked_in_avoidance",
        "_initial_window",
        "_mss",
        "congestion_window",
        "minimum_window",
        "recovery_start",
        "ssthresh",
    )
    beta = 0.5

    def __init__(self, *, max_datagram_size: int, initial_window: int, minimum_window: int) -> None:
        self._mss = max_datagram_size
        self._initial_window = initial_window
        self.minimum_window = minimum_window
        self.reset()

    def reset(self) -> None:
        self.congestion_window = self._initial_window
        self.ssthresh = math.inf
        self.recovery_start = -math.inf
        self._acked_in_avoidance = 0

    def in_recovery(self, sent_time: float) -> bool:
        return sent_time <= self.recovery_start

    def on_packets_acked(self, acked_bytes: int, now: float, rtt: float) -> None:
        if self.congestion_window < self.ssthresh:
            self.congestion_window += acked_bytes
            return
        self._avoid(acked_bytes, now, rtt)

    def _avoid(self, acked_bytes: int, now: float, rtt: float) -> None:
        self._acked_in_avoidance += acked_bytes
        if self._acked_in_avoidance >= self.congestion_window:
            self._acked_in_avoidance -= self.congestion_window
            self.congestion_window += self._mss

    def on_congestion_event(self, sent_time: float, now: float) -> None:
        if sent_time <= self.recovery_start:
            return  # one reduction per round trip: this loss belongs to the last one
        self.recovery_start = now
        self._reduce(now)

    def _reduce(self, now: float) -> None:
        window = max(int(self.congestion_window * self.beta), self.minimum_window)
        self.congestion_window = window
        self.ssthresh = window
        self._acked_in_avoidance = 0

    def on_persistent_congestion(self) -> None:
        self.congestion_window = self.minimum_window
        self.recovery_start = -math.inf


class Cubic(CongestionController):
    """CUBIC (RFC 9438): after a loss the window follows W_cubic(t) = C (t - K)^3 + W_max,
    concave up to the old maximum, then convex beyond it; never slower than Reno would be
    (the Reno-friendly estimate W_est)."""

    __slots__ = ("_epoch_start", "_k", "_w_est", "_w_max")
    beta = 0.7
    c = 0.4

    def reset(self) -> None:
        super().reset()
        self._epoch_start: float | None = None
        self._w_max = 0.0  # in datagrams
        self._k = 0.0
        self._w_est = 0.0

    def _reduce(self, now: float) -> None:
        mss = self._mss
        window = self.congestion_window / mss
        if window < self._w_max:  # fast convergence (RFC 9438 4.7): yield to newcomers
            self._w_max = window * (1 + self.beta) / 2
        else:
            self._w_max = window
        super()._reduce(now)
        self._k = math.cbrt(self._w_max * (1 - self.beta) / self.c)
        self._epoch_start = now
        self._w_est = self.congestion_window / mss

    def w_cubic(self, t: float) -> float:
        """The window (in datagrams) t seconds into the current epoch."""
        return self.c * (t - self._k) ** 3 + self._w_max

    def _avoid(self, acked_bytes: int, now: float, rtt: float) -> None:
        mss = self._mss
        if self._epoch_start is None:  # congestion avoidance without a loss yet
            self._epoch_start = now
            self._w_max = self.congestion_window / mss
            self._k = 0.0
            self._w_est = self._w_max
        window = self.congestion_window / mss
        t = now - self._epoch_start
        alpha = 3 * (1 - self.beta) / (1 + self.beta)
        self._w_est += alpha * (acked_bytes / mss) / window
        cubic = self.w_cubic(t)
        if cubic < self._w_est:
            self.congestion_window = max(self.congestion_window, int(self._w_est * mss))
            return
        target = min(max(self.w_cubic(t + rtt), window), 1.5 * window)
        growth = (target - window) / window * (acked_bytes / mss)
        self.congestion_window += int(growth * mss)


def make_congestion(
    kind: CongestionKind, *, max_datagram_size: int, initial_window: int, minimum_window: int
) -> CongestionController:
    cls = Cubic if kind is CongestionKind.CUBIC else CongestionController
    return cls(
        max_datagram_size=max_datagram_size,
        initial_window=initial_window,
        minimum_window=minimum_window,
    )


class Pacer:
    """A token bucket filled at 1.25 x window / smoothed RTT. Sending may run ahead of it
    by ``granularity`` seconds' worth (an event loop cannot wake every few microseconds:
    bursts of about a millisecond are what a kernel pacer allows too)."""

    __slots__ = ("_budget", "_capacity", "_granularity", "_last", "_mss", "rate")

    def __init__(self, *, max_datagram_size: int, granularity: float) -> None:
        self._mss = max_datagram_size
        self._granularity = granularity
        self.rate = math.inf  # bytes per second
        self._budget = 0.0
        self._capacity = 0.0
        self._last = -math.inf

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        self.rate = 1.25 * congestion_window / max(smoothed_rtt, 1e-6)
        # A burst of up to a quarter window (at least ten datagrams) may go back to back.
        self._capacity = max(10 * self._mss, congestion_window / 4)

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._budget = min(self._capacity, self._budget + (now - self._last) * self.rate)
            self._last = now

    def send_time(self, now: float) -> float:
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
