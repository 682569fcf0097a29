"""Progress of a transfer, sans-I/O: bytes done of a total, the rate over a sliding
window, the time left, when to report, and the terminal line that shows it. The adapter
feeds it ``now``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from peer.errors import LocalProtocolError


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    done: int
    total: int
    elapsed: float  # seconds since the meter started
    rate: float | None  # bytes per second over the meter's window; None before it can tell
    eta: float | None  # seconds left at that rate

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total


class ProgressMeter:
    """Bytes done of a total, the rate over a sliding window, and when to report: the
    adapter feeds it ``now``; ``advance`` answers a Progress when one is due (at most every
    ``interval`` seconds, and always for the first and the last step)."""

    MIN_SPAN = 0.1  # seconds of samples before a rate is worth showing

    def __init__(self, total: int, now: float, *, window: float = 3.0, interval: float = 0.2):
        if total < 0 or window <= 0 or interval < 0:
            raise LocalProtocolError("a progress meter needs total >= 0, window > 0")
        self.total = total
        self.done = 0
        self.started = now
        self.window = window
        self.interval = interval
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])
        self._last_report: float | None = None
        self._reported_end = False

    def advance(self, count: int, now: float) -> Progress | None:
        self.done += count
        self._samples.append((now, self.done))
        # Keep one sample at or before the window's start as the baseline of the rate.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        finished = self.done >= self.total
        if finished and self._reported_end:
            return None
        due = self._last_report is None or now - self._last_report >= self.interval
        if not (due or finished):
            return None
        self._last_report = now
        self._reported_end = finished
        return self.snapshot(now)

    def snapshot(self, now: float) -> Progress:
        since, baseline = self._samples[0]
        # (no rate from the first instants: a 0 B/s there says nothing about the link)
        measured = now - since >= min(self.MIN_SPAN, self.window)
        rate = (self.done - baseline) / (now - since) if measured else None
        left = self.total - self.done
        eta = 0.0 if left <= 0 else (left / rate if rate else None)
        return Progress(
            done=self.done, total=self.total, elapsed=now - self.started, rate=rate, eta=eta
        )


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(name: str, progress: Progress, *, width: int = 20) -> str:
    """One terminal line: ``name  42% [########------------] 4.2 MiB / 10.0 MiB  ...``."""
    filled = round(progress.fraction * width)
    rate = "-" if progress.rate is None else f"{format_bytes(progress.rate)}/s"
    eta = "-" if progress.eta is None else format_duration(progress.eta)
    return (
        f"{name}  {progress.fraction * 100:3.0f}% [{'#' * filled}{'-' * (width - filled)}] "
        f"{format_bytes(progress.done)} / {format_bytes(progress.total)}  {rate}  ETA {eta}"
    )
