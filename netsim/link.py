"""A bottleneck: one direction of a link with a finite rate and a drop-tail FIFO queue.

What it models, per direction and in virtual time:

- **serialisation**: a packet of ``size`` bytes (plus ``overhead_bytes`` of headers the
  caller does not count, e.g. 28 for IPv4 + UDP) occupies the transmitter for
  ``(size + overhead_bytes) * 8 / rate_bps`` seconds, one packet after another;
- **a drop-tail queue** of ``queue_bytes``: a packet that would take the bytes admitted and
  not yet fully sent (the one on the wire included) over the limit is dropped on arrival;
- **propagation delay**: ``delay`` seconds from the last bit leaving to its arrival;
- **random loss**: ``loss`` percent (0..100, like :class:`netsim.nodes.Link`) of the packets
  the queue admits are lost on the wire after being sent (so they still used the link),
  drawn from an injected ``random.Random`` only when ``loss`` is non-zero.

What it does not model: reordering (packets leave in the order offered, with one constant
delay; only loss makes gaps), jitter, ECN or any AQM (RED, CoDel), corruption, per-flow
fairness (one FIFO for everyone), or a queue that drains at a rate varying by itself.
Time is exact, so strictly periodic senders in lockstep meet drop-tail's phase effect: the
one whose packet comes first at the instant a slot frees always gets it (add send-time
randomness, or jitter on the node's link, to break the lockstep).
``config`` may be replaced mid-run (a rate change); packets already admitted keep their
times.

Stats count wire bytes (``size + overhead_bytes``). ``delivered`` is counted when a packet
is offered: its arrival is certain from then on (the returned time may be in the future).
``mean_queue_delay`` is the average wait of an admitted packet between its offer and its
first bit on the wire (what a full queue adds to the round trip).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

from netsim.tracing import DropReason


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    rate_bps: float | None = None  # bits per second; None: infinitely fast, never queues
    queue_bytes: int | None = None  # drop-tail limit; None: unbounded
    delay: float = 0.0  # one-way propagation, seconds
    loss: float = 0.0  # percent (0..100) of admitted packets lost on the wire
    overhead_bytes: int = 0  # added to every packet's size on the wire (headers)

    def __post_init__(self) -> None:
        if self.rate_bps is not None and not (0 < self.rate_bps < math.inf):
            raise ValueError(f"rate_bps must be a positive number or None, not {self.rate_bps}")
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ValueError(f"queue_bytes must be >= 0 or None, not {self.queue_bytes}")
        if not 0 <= self.delay < math.inf:
            raise ValueError(f"delay must be a finite number of seconds >= 0, not {self.delay}")
        if not 0 <= self.loss <= 100:
            raise ValueError(f"loss must be a percentage 0..100, not {self.loss}")
        if self.overhead_bytes < 0:
            raise ValueError(f"overhead_bytes must be >= 0, not {self.overhead_bytes}")

    def serialisation(self, size: int) -> float:
        """Seconds the transmitter spends on a packet of ``size`` bytes."""
        if self.rate_bps is None:
            return 0.0
        return (size + self.overhead_bytes) * 8 / self.rate_bps


@dataclass(slots=True)
class LinkStats:
    offered_packets: int = 0
    offered_bytes: int = 0
    delivered_packets: int = 0
    delivered_bytes: int = 0
    dropped_queue_packets: int = 0  # drop-tail: the queue was full
    dropped_queue_bytes: int = 0
    dropped_loss_packets: int = 0  # random loss on the wire
    dropped_loss_bytes: int = 0
    max_queue_bytes: int = 0  # the most bytes ever admitted and not yet sent
    busy_time: float = 0.0  # seconds the transmitter is (or is scheduled to be) sending
    # Queueing delay of the admitted packets: from the offer to the first bit on the wire.
    queue_delay_total: float = 0.0
    max_queue_delay: float = 0.0

    @property
    def admitted_packets(self) -> int:
        return self.delivered_packets + self.dropped_loss_packets

    @property
    def mean_queue_delay(self) -> float:
        """Seconds an admitted packet waited, on average, before being sent (0: none)."""
        admitted = self.admitted_packets
        return self.queue_delay_total / admitted if admitted else 0.0


class BottleneckLink:
    """One direction of a bottleneck. Feed it packets in non-decreasing ``now``."""

    def __init__(self, config: LinkConfig, *, rng: random.Random) -> None:
        self.config = config  # replace freely mid-run (e.g. a rate drop)
        self.stats = LinkStats()
        self._rng = rng
        self._free_at = 0.0  # when the transmitter finishes everything admitted so far
        self._in_queue: deque[tuple[float, int]] = deque()  # (last bit sent at, wire bytes)
        self._queued_bytes = 0
        # Busy periods, merged while back to back, for utilisation over any window.
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._busy_before: list[float] = []  # busy seconds before each period starts

    def offer(self, size: int, now: float) -> float | None:
        """The packet's arrival time at the far end, or None when it is dropped."""
        outcome = self.transmit(size, now)
        return None if isinstance(outcome, DropReason) else outcome

    def transmit(self, size: int, now: float) -> float | DropReason:
        """As :meth:`offer`, saying why a packet is dropped: ``QUEUE_FULL`` or ``LOSS``."""
        config = self.config
        wire = size + config.overhead_bytes
        stats = self.stats
        stats.offered_packets += 1
        stats.offered_bytes += wire
        queued = self.queue_bytes(now)
        if config.queue_bytes is not None and queued + wire > config.queue_bytes:
            stats.dropped_queue_packets += 1
            stats.dropped_queue_bytes += wire
            return DropReason.QUEUE_FULL
        sent_at = now
        if config.rate_bps is not None:
            start = max(now, self._free_at)
            sent_at = self._free_at = start + config.serialisation(size)
            waited = start - now
            stats.queue_delay_total += waited
            stats.max_queue_delay = max(stats.max_queue_delay, waited)
            self._busy(start, sent_at)
            self._in_queue.append((sent_at, wire))
            self._queued_bytes = queued + wire
            stats.max_queue_bytes = max(stats.max_queue_bytes, self._queued_bytes)
        # Draw only on a lossy link, so a clean one leaves a seeded sequence unperturbed.
        if config.loss and self._rng.random() * 100 < config.loss:
            stats.dropped_loss_packets += 1
            stats.dropped_loss_bytes += wire
            return DropReason.LOSS
        stats.delivered_packets += 1
        stats.delivered_bytes += wire
        return sent_at + config.delay

    def queue_bytes(self, now: float) -> int:
        """Bytes admitted and not yet fully sent at ``now`` (the one on the wire included)."""
        queue = self._in_queue
        while queue and queue[0][0] <= now:
            self._queued_bytes -= queue.popleft()[1]
        return self._queued_bytes

    def utilisation(self, start: float, end: float) -> float:
        """The fraction of ``[start, end]`` the transmitter spends sending (lost packets
        included: they used the link); counts what is already scheduled past the last
        offer."""
        if not end > start:
            raise ValueError(f"utilisation needs end > start, not [{start}, {end}]")
        return (self._busy_until(end) - self._busy_until(start)) / (end - start)

    def _busy(self, start: float, end: float) -> None:
        self.stats.busy_time += end - start
        if self._ends and self._ends[-1] == start:  # back to back: one period
            self._ends[-1] = end
            return
        before = self._busy_before[-1] + self._ends[-1] - self._starts[-1] if self._ends else 0.0
        self._starts.append(start)
        self._ends.append(end)
        self._busy_before.append(before)

    def _busy_until(self, time: float) -> float:
        """Busy seconds from time 0 to ``time``."""
        index = bisect_right(self._starts, time) - 1
        if index < 0:
            return 0.0
        return self._busy_before[index] + min(time, self._ends[index]) - self._starts[index]
