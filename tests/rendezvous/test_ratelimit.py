from __future__ import annotations

import pytest

from rendezvous.ratelimit import RateLimit, SourceRateLimiter


def test_table_stays_bounded() -> None:
    limiter = SourceRateLimiter(RateLimit(rate=1, burst=1, max_sources=100))
    for i in range(10_000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) <= 100


def test_refill_is_capped_at_burst() -> None:
    limiter = SourceRateLimiter(RateLimit(rate=100, burst=3))
    assert limiter.allow("a", 0.0)
    # A long idle period refills to the burst size, not beyond.
    results = [limiter.allow("a", 1000.0) for _ in range(5)]
    assert results == [True, True, True, False, False]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimit(rate=0)
