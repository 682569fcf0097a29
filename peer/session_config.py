"""How a session punches, fails over and keeps its path alive: one frozen, self-checking
configuration that the session's parts (peer.punching, peer.paths, peer.keepalive, the
transport) read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peer.birthday import BirthdayConfig
from peer.channel import ChannelConfig
from peer.errors import LocalProtocolError
from peer.transport.config import TransportConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    # Punching: a fast burst (the common case: both sides start together), then a slower
    # tail so that a side whose introduction was delayed by loss (a retransmitted CONNECT
    # answer or PEER request arrives seconds late) still meets the other; bounded either way
    # (50 + 36 packets per candidate with these values).
    punch_interval: float = 0.02  # cadence of the burst, seconds
    punch_burst: int = 50  # packets per candidate at that cadence (1 s)
    punch_slow_interval: float = 0.25
    punch_timeout: float = 10.0  # seconds from the first punch packet: then give up
    # No direct path after this long: also try the other side's relay allocation (the
    # channel comes up there; direct punching goes on and takes over once proven).
    relay_after: float = 1.0
    # Failover: on a direct path, data unacknowledged this long (or nothing heard for two
    # keepalive intervals and a bit) moves the channel to the relay, if there is one.
    failover_after: float = 2.0
    # On the relay, keepalives go to the last direct endpoint at this interval (doubling up
    # to ``repunch_max``), and direct packets must keep coming for ``stable_for`` seconds
    # before the channel moves back (no flapping).
    repunch_interval: float = 1.0
    repunch_max: float = 30.0
    stable_for: float = 1.0
    # Symmetric NAT against a port-restricted cone: the birthday trick (peer.birthday).
    birthday: BirthdayConfig = field(default_factory=BirthdayConfig)
    keepalive_interval: float | None = 15.0  # nothing sent for this long -> keepalive; None: off
    keepalive_jitter: float = 0.1  # +-10%, so that many peers do not beat in step
    dead_after: float = 40.0  # nothing authenticated received for this long -> path dead
    # Something ack-eliciting (data, or a keepalive) unanswered for this long on every path
    # tried: the peer is gone (a killed peer is noticed within a keepalive interval and this).
    unanswered_after: float = 8.0
    # Before failing over, the relay must answer a path challenge (probed at this cadence).
    relay_probe_interval: float = 0.5
    # A path of the same kind from another address (the peer's NAT rebound) takes over
    # only once the current one has been silent this long (no flapping between two).
    roam_after: float = 0.5
    transport: TransportConfig = field(default_factory=TransportConfig)
    # The encrypted channel: its replay window and key updates (by volume and by time).
    channel: ChannelConfig = field(default_factory=ChannelConfig)

    def __post_init__(self) -> None:
        positive = {
            "punch_interval": self.punch_interval,
            "punch_slow_interval": self.punch_slow_interval,
            "punch_timeout": self.punch_timeout,
            "failover_after": self.failover_after,
            "repunch_interval": self.repunch_interval,
            "dead_after": self.dead_after,  # math.inf: no dead-path detection
            "unanswered_after": self.unanswered_after,  # math.inf: no such verdict
            "relay_probe_interval": self.relay_probe_interval,
        }
        for name, value in positive.items():
            if not value > 0:  # also refuses NaN
                raise LocalProtocolError(f"{name} must be positive, not {value!r}")
        if (
            self.punch_burst < 0
            or not self.relay_after >= 0
            or not self.stable_for >= 0
            or not self.roam_after >= 0
        ):
            raise LocalProtocolError(
                "punch_burst, relay_after, stable_for and roam_after must be >= 0"
            )
        if not self.repunch_max >= self.repunch_interval:
            raise LocalProtocolError("repunch_max must be at least repunch_interval")
        if self.keepalive_interval is not None and not 0 < self.keepalive_interval < math.inf:
            raise LocalProtocolError("keepalive_interval must be positive and finite, or None")
        if not 0 <= self.keepalive_jitter < 1:
            raise LocalProtocolError("keepalive_jitter must be in [0, 1)")
