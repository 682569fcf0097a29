"""Which packet numbers we received, as the ranges an ACK frame reports (RFC 9000 13.2),
and when the acknowledgement is due."""

from __future__ import annotations


class AckTracker:
    """Received packet numbers as ascending inclusive [low, high] ranges; the newest
    ``max_ranges`` are reported, the older forgotten (their packets were acknowledged
    often enough by then, or the peer will resend what it thinks lost)."""

    __slots__ = ("_max_ranges", "due_at", "due_now", "eliciting", "largest_at", "ranges")

    def __init__(self, max_ranges: int) -> None:
        self._max_ranges = max_ranges
        self.ranges: list[list[int]] = []
        self.largest_at = 0.0  # when the largest number arrived (for the ACK's delay)
        self.eliciting = 0  # ack-eliciting packets since the last ACK we sent
        self.due_at: float | None = None  # an ACK must go out by then
        self.due_now = False

    def add(self, number: int, now: float) -> bool:
        """Record ``number``; True if it arrived in order (the next after the largest)."""
        ranges = self.ranges
        if ranges:
            last = ranges[-1]
            if number == last[1] + 1:
                last[1] = number
                self.largest_at = now
                return True
            if number > last[1]:
                ranges.append([number, number])
                self.largest_at = now
                if len(ranges) > self._max_ranges:
                    del ranges[0]
                return False
            self._insert(number)
            return False
        ranges.append([number, number])
        self.largest_at = now
        return True

    def _insert(self, number: int) -> None:
        ranges = self.ranges
        for index in range(len(ranges) - 1, -1, -1):
            low, high = ranges[index]
            if low <= number <= high:
                return
            if number > high:
                ranges.insert(index + 1, [number, number])
                break
        else:
            ranges.insert(0, [number, number])
            index = -1
        # Merge neighbours that now touch.
        merged: list[list[int]] = []
        for pair in ranges:
            if merged and pair[0] <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], pair[1])
            else:
                merged.append(pair)
        self.ranges = merged

    def descending(self) -> tuple[tuple[int, int], ...]:
        return tuple((low, high) for low, high in reversed(self.ranges))

    def forget_through(self, number: int) -> None:
        """The peer has our ACK reporting up to ``number``: stop reporting below it."""
        ranges = self.ranges
        while ranges and ranges[0][1] <= number and len(ranges) > 1:
            del ranges[0]
        if ranges and ranges[0][0] <= number < ranges[0][1] and len(ranges) > 1:
            ranges[0][0] = number + 1

    def sent(self) -> None:
        self.eliciting = 0
        self.due_at = None
        self.due_now = False
