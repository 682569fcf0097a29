"""Quotas the rendezvous keeps beside its request rate limit: what one source may create
and what one peer may be made to do, each a token bucket (rendezvous.ratelimit).

* New names per source (an IPv4 address or an IPv6 /64): logging in is free, and every new
  name is a row kept for good; a returning peer's login is not counted.
* Registrations per source: how many peers may be online at once from one address.
* Introductions per target name: every CONNECT makes the target send probes to the
  caller's addresses, so a flood of them toward one peer would make it a reflector.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.errors import ConfigError
from rendezvous.ratelimit import RateLimit, SourceRateLimiter, source_key

__all__ = ["QuotaConfig", "Quotas"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaConfig:
    new_names_per_hour: float = 60.0  # per source, sustained
    new_names_burst: int = 10
    introductions_per_second: float = 5.0  # to one target name, sustained
    introductions_burst: int = 20
    # Peers online at once from one source: an office or a carrier-grade NAT puts many
    # behind one address, so this is generous; it bounds one host's share of max_peers.
    registrations_per_source: int = 1000
    max_tracked: int = 65536  # sources and targets remembered (memory bound)

    def __post_init__(self) -> None:
        if self.new_names_per_hour <= 0 or self.introductions_per_second <= 0:
            raise ConfigError("quota rates must be positive")
        bursts = (self.new_names_burst, self.introductions_burst, self.max_tracked)
        if min(*bursts, self.registrations_per_source) < 1:
            raise ConfigError("quota bursts and max_tracked must be at least 1")


class Quotas:
    def __init__(self, config: QuotaConfig) -> None:
        self._config = config
        self._online_from: dict[str, int] = {}  # source key -> peers registered from it
        self._new_names = SourceRateLimiter(
            RateLimit(
                rate=config.new_names_per_hour / 3600,
                burst=config.new_names_burst,
                max_sources=config.max_tracked,
            )
        )
        self._introductions = SourceRateLimiter(
            RateLimit(
                rate=config.introductions_per_second,
                burst=config.introductions_burst,
                max_sources=config.max_tracked,
            )
        )

    def new_name(self, source_ip: str, now: float) -> bool:
        """May ``source_ip`` create one more name now?"""
        return self._new_names.allow(source_ip, now)

    def introduction(self, target: str, now: float) -> bool:
        """May one more peer be introduced to ``target`` now?"""
        return self._introductions.allow("name " + target, now)

    def may_register(self, source_ip: str) -> bool:
        """May one more peer be online from ``source_ip`` (its address, or its /64)?"""
        return (
            self._online_from.get(source_key(source_ip), 0) < self._config.registrations_per_source
        )

    def registered(self, source_ip: str) -> None:
        key = source_key(source_ip)
        self._online_from[key] = self._online_from.get(key, 0) + 1

    def unregistered(self, source_ip: str) -> None:
        """A registration from ``source_ip`` ended (expired, or replaced by a new login)."""
        key = source_key(source_ip)
        left = self._online_from.get(key, 0) - 1
        if left > 0:
            self._online_from[key] = left
        else:
            self._online_from.pop(key, None)
