"""When a session must say something so that the path stays open, and when silence means
the path is dead.

Keepalives go out when nothing was sent for ``keepalive_interval`` (jittered +-10% per
gap, so that many peers behind one NAT do not beat in step); a path over which nothing
authenticated arrived for ``dead_after`` is dead. With keepalives off, silence proves
nothing, so the caller turns dead-path detection off with them (``dead_after=inf``).
"""

from __future__ import annotations

import math
import random

from peer.session_config import SessionConfig

# On a direct path, nothing heard for this many keepalive intervals: move to the relay.
SILENT_INTERVALS = 2.5


class KeepaliveClock:
    """Last sent, last received, and the deadlines that follow from them."""

    __slots__ = (
        "_dead_after",
        "_gap",
        "_interval",
        "_jitter_low",
        "_jitter_span",
        "_listening",
        "_rng",
        "last_received",
        "last_sent",
    )

    def __init__(self, config: SessionConfig, rng: random.Random, now: float) -> None:
        self._interval = config.keepalive_interval
        # rng.uniform(low, high), spelt out: this runs for every datagram sent.
        low, high = 1 - config.keepalive_jitter, 1 + config.keepalive_jitter
        self._jitter_low, self._jitter_span = low, high - low
        self._dead_after = config.dead_after
        self._rng = rng
        self.last_received = now
        self._listening = False  # no channel yet: nothing can be heard, nothing is dead
        # keepalives off (a negative control in tests, or the app's choice): never due
        self._gap = math.inf
        self.sent(now)

    def channel_opened(self, now: float) -> None:
        """The handshake is done: from now on silence counts."""
        self._listening = True
        self.last_received = now

    def sent(self, now: float) -> None:
        """Something went out: the next keepalive is due a jittered interval later."""
        self.last_sent = now
        interval = self._interval
        if interval is not None:
            self._gap = interval * (self._jitter_low + self._jitter_span * self._rng.random())

    def keepalive_at(self) -> float | None:
        """Nothing sent since: send a keepalive then (None: keepalives off)."""
        return None if self._gap == math.inf else self.last_sent + self._gap

    def dead_at(self) -> float | None:
        """Nothing authenticated received since: the path is dead then."""
        if not self._listening or self._dead_after == math.inf:
            return None
        return self.last_received + self._dead_after

    def silent_at(self) -> float | None:
        """A direct path silent since then looks broken (failover); None without
        keepalives, whose absence would make any quiet path look broken."""
        if self._interval is None:
            return None
        return self.last_received + SILENT_INTERVALS * self._interval
