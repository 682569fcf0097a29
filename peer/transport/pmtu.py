"""Packetization-layer path MTU discovery (RFC 8899, DPLPMTUD), sans-I/O: how large the
transport's packets may be on the current path.

Every path starts at the base size, which any path carries without IP fragmentation
(1,200-byte datagrams once sealed). The search then sends one probe at a time (a PING
padded to the candidate size, ack-eliciting but outside congestion control: a probe's loss
is no congestion signal): an acknowledged probe raises the size, ``probes`` probes of one
size lost in a row lower the ceiling below it, and the next candidate halves what is left,
the largest first (most paths carry a full Ethernet frame). The search ends when less than
``resolution`` bytes remain undecided; a new path starts over from the base.
"""

from __future__ import annotations

__all__ = ["MtuSearch"]


class MtuSearch:
    __slots__ = (
        "_ceiling",
        "_first",
        "_high",
        "_losses",
        "_probes",
        "_resolution",
        "base",
        "in_flight",
        "searching",
        "size",
    )

    def __init__(self, base: int, ceiling: int, *, probes: int = 3, resolution: int = 16) -> None:
        self.base = base
        self._ceiling = ceiling
        self._probes = probes
        self._resolution = resolution
        self.size = base  # what packets may be now (confirmed)
        self._high = ceiling  # the largest size not yet known to fail
        self._losses = 0  # probes of the current candidate lost in a row
        self._first = True
        self.in_flight: int | None = None  # the size of the probe awaiting its fate
        self.searching = False

    def restart(self, enabled: bool) -> None:
        """A new path: back to the base size; search it if ``enabled``."""
        self.size = self.base
        self._high = self._ceiling
        self._losses = 0
        self._first = True
        self.in_flight = None
        self.searching = enabled and self._ceiling - self.base >= self._resolution

    def next_probe(self) -> int | None:
        """The size to probe now, or None (no search, or a probe already out)."""
        if not self.searching or self.in_flight is not None:
            return None
        if self._first:
            return self._high
        return (self.size + self._high + 1) // 2

    def on_sent(self, size: int) -> None:
        self.in_flight = size

    def on_acked(self, size: int) -> None:
        if size == self.in_flight:
            self.in_flight = None
        if size > self.size:
            self.size = size
            self._losses = 0
            self._first = False
            self._settle()

    def on_lost(self, size: int) -> None:
        if size != self.in_flight:
            return  # (a probe of an earlier path)
        self.in_flight = None
        self._losses += 1
        if self._losses >= self._probes:  # not random loss: the path drops this size
            self._high = size - 1
            self._losses = 0
            self._first = False
            self._settle()

    def _settle(self) -> None:
        if self._high - self.size < self._resolution:
            self.searching = False
