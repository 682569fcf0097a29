"""How loss detection and congestion control behave (peer.transport.recovery): one
frozen, self-checking configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass

from peer.errors import LocalProtocolError
from peer.transport.congestion import CongestionKind

__all__ = ["RecoveryConfig"]


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
    probes: int = 2  # packets sent when a probe timeout fires (RFC 9002 6.2.4: 1 or 2)
    # The probe timeout doubles with each unanswered one (RFC 9002 6.2.1), but never past
    # this (unless one base timeout is longer): the session gives up after 8 s with nothing
    # acknowledged, and a path losing a fifth of its packets must get several probes
    # through in that time, not three (0.4 + 0.8 + 1.6 + 3.2 s), or one bad run of
    # losses ends a healthy connection.
    max_pto_interval: float = 1.0
    # Random loss is not congestion (wireless, a lossy relay hop): a loss reduces the
    # window only when the round trip shows a queue (the latest RTT above the minimum by
    # a quarter, and at least queue_delay), or when a round trip lost more than it
    # usually does: over loss_tolerance of its packets, and over twice the loss rate of
    # the round trips that showed no queue (a moving average, so that a path losing 10%
    # at random keeps its window while a queue's overflow still counts),
    # and at least loss_min_packets of them (a window of three that loses one tells
    # nothing). loss_tolerance=0 makes every loss count, as in RFC 9002.
    loss_tolerance: float = 0.1
    loss_min_packets: int = 4
    queue_delay: float = 0.004

    def __post_init__(self) -> None:
        if not isinstance(self.congestion, CongestionKind):
            raise LocalProtocolError(
                f"congestion must be a CongestionKind, not {self.congestion!r}"
            )
        for name in (
            "max_datagram_size",
            "packet_threshold",
            "initial_window_packets",
            "minimum_window_packets",
            "persistent_congestion_threshold",
            "probes",
            "loss_min_packets",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} must be a positive integer, not {value!r}")
        if self.max_datagram_size < 200:
            raise LocalProtocolError("max_datagram_size must be at least 200")
        if self.minimum_window_packets > self.initial_window_packets:
            raise LocalProtocolError("minimum_window_packets must be <= initial_window_packets")
        if self.probes > 2:
            raise LocalProtocolError("probes must be 1 or 2 (RFC 9002 6.2.4)")
        for name in ("initial_rtt", "granularity", "max_pto_interval"):
            if not 0 < getattr(self, name) < math.inf:
                raise LocalProtocolError(f"{name} must be a positive number of seconds")
        if not 0 <= self.max_ack_delay < math.inf:
            raise LocalProtocolError("max_ack_delay must be >= 0 seconds")
        if not 1 <= self.time_threshold < math.inf:
            raise LocalProtocolError("time_threshold must be at least 1 (round trips)")
        if not 0 <= self.loss_tolerance < 1:
            raise LocalProtocolError("loss_tolerance must be in [0, 1)")
        if not 0 <= self.queue_delay < math.inf:
            raise LocalProtocolError("queue_delay must be >= 0 seconds")
