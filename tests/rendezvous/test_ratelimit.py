from __future__ import annotations

import pytest

from rendezvous.ratelimit import RateLimit, SourceRateLimiter, source_key


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


def test_an_ipv6_slash_64_is_one_source() -> None:
    # One subscriber holds a whole /64: a per-address limit would let it through 2**64 times.
    limiter = SourceRateLimiter(RateLimit(rate=1.0, burst=2))
    assert limiter.allow("2001:db8:1:2::1", 0.0)
    assert limiter.allow("2001:db8:1:2:ffff::99", 0.0)
    assert not limiter.allow("2001:db8:1:2:abcd::7", 0.0)  # (the same /64, bucket empty)
    assert limiter.allow("2001:db8:1:3::1", 0.0)  # another /64
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1" == source_key("192.0.2.1")
