from __future__ import annotations

import pytest

from rendezvous.ratelimit import BYTES_PER_TOKEN, RateLimit, SourceRateLimiter, cost_of, source_key


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


def test_big_requests_cost_in_proportion_to_their_bytes() -> None:
    limiter = SourceRateLimiter(RateLimit(rate=1, burst=200))
    # A 65 KB datagram costs 128 tokens: one source gets one of those through a bucket
    # that would take 200 small requests.
    assert cost_of(20) == cost_of(BYTES_PER_TOKEN) == 1.0
    assert cost_of(65_536) == 128.0
    assert limiter.allow("192.0.2.1", 0.0, cost_of(65_536))
    assert not limiter.allow("192.0.2.1", 0.0, cost_of(65_536))
    assert sum(limiter.allow("192.0.2.1", 0.0) for _ in range(100)) == 72  # (what is left)
    assert limiter.allow("192.0.2.2", 0.0)  # another source is not charged


def test_the_core_charges_a_datagram_by_its_size() -> None:
    from rendezvous.binding import StunServiceConfig
    from rendezvous.core import RendezvousCore
    from rendezvous.introductions import RendezvousConfig
    from rendezvous.registry import NameRegistry
    from rendezvous.routes import UdpSocket
    from stunproto import AttrType, MessageClass, StunMessage
    from stunproto.message import new_transaction_id

    local = ("203.0.113.10", 3478)
    stun = StunServiceConfig(primary=local, rate_limit=RateLimit(rate=1, burst=100))
    core = RendezvousCore(RendezvousConfig(stun=stun), NameRegistry())
    big = StunMessage(
        0x001, MessageClass.REQUEST, new_transaction_id(), ((AttrType.SOFTWARE, "x" * 30_000),)
    ).encode()
    source = ("198.51.100.7", 5000)
    answered = 0
    for _ in range(5):
        core.receive_datagram(big, source, UdpSocket(local), 0.0)
        answered += len(core.datagrams_to_send(0.0))
    assert answered == 1  # 59 tokens each: the second finds 41 left
