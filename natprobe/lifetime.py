"""Binding-lifetime search plan (RFC 5780 section 4.6), as pure functions.

Each probe uses a fresh socket, because any packet through a binding refreshes it; probes
therefore run in parallel: first on a doubling ladder of waits, then on an even grid inside
the bracket the ladder found.
"""

from __future__ import annotations


def ladder(maximum: float, first: float = 1.0) -> list[float]:
    """Waits 1, 2, 4, ... below ``maximum``, then ``maximum`` itself."""
    if maximum <= 0:
        raise ValueError("maximum must be positive")
    waits: list[float] = []
    wait = min(first, maximum)
    while wait < maximum:
        waits.append(wait)
        wait *= 2
    waits.append(maximum)
    return waits


def bracket(results: dict[float, bool]) -> tuple[float, float | None]:
    """(longest wait seen alive or 0, shortest longer wait seen expired or None)."""
    alive = max((wait for wait, ok in results.items() if ok), default=0.0)
    expired = [wait for wait, ok in results.items() if not ok and wait > alive]
    return alive, min(expired, default=None)


def grid(low: float, high: float, count: int = 4) -> list[float]:
    """``count`` waits evenly inside (low, high)."""
    step = (high - low) / (count + 1)
    return [round(low + step * (i + 1), 3) for i in range(count)]
