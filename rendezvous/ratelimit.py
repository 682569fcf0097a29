"""Per-source token buckets with a bounded table, so the server cannot be used as a
reflector/amplifier against a victim whose address a spoofer puts in the source field."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from rendezvous.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    rate: float = 200.0  # sustained requests per second per source IP
    burst: float = 400.0  # bucket size
    max_sources: int = 65536  # bound on tracked sources (memory)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.max_sources < 1:
            raise ConfigError("rate must be positive, burst and max_sources at least 1")


@functools.lru_cache(maxsize=4096)
def source_key(ip: str) -> str:
    """What counts as one source: an IPv4 address, or an IPv6 /64 (a subscriber's LAN gets
    a whole /64, so a per-address limit would let one host through with 2**64 addresses).
    A v4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return ip


# One token buys a request of up to this many bytes; a bigger one costs more in proportion,
# so that the limit bounds the bytes (and the parsing) a source gets, not just the count:
# a 65 KB datagram costs 128 tokens. The plain 20-byte Binding costs one.
BYTES_PER_TOKEN = 512


def cost_of(size: int) -> float:
    """The tokens a request of ``size`` bytes costs."""
    return 1.0 if size <= BYTES_PER_TOKEN else size / BYTES_PER_TOKEN


class SourceRateLimiter:
    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        # ip -> [tokens, last refill time]; a list to update in place on the hot path
        self._buckets: dict[str, list[float]] = {}
        self.dropped = 0

    def allow(self, source_ip: str, now: float, cost: float = 1.0) -> bool:
        if ":" in source_ip:  # IPv6: one bucket per /64, what one subscriber gets
            source_ip = source_key(source_ip)
        bucket = self._buckets.get(source_ip)
        limit = self._limit
        if bucket is None:
            if len(self._buckets) >= limit.max_sources:
                self._evict()
            self._buckets[source_ip] = [limit.burst - cost, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * limit.rate
        if tokens > limit.burst:
            tokens = limit.burst
        bucket[1] = now
        if tokens < cost:
            bucket[0] = tokens
            self.dropped += 1
            return False
        bucket[0] = tokens - cost
        return True

    def _evict(self) -> None:
        # Drop the oldest half of the table (dicts keep insertion order). An evicted source
        # restarts with a full bucket, so the worst case is one extra burst per eviction
        # cycle, still bounded.
        for key in list(self._buckets)[: max(1, len(self._buckets) // 2)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
