"""Quotas the rendezvous keeps beside its request rate limit: what one source may create
and what one peer may be made to do, each a token bucket (rendezvous.ratelimit).

* New names per source (an IPv4 address or an IPv6 /64): logging in is free, and every new
  name is a row kept for good; a returning peer's login is not counted.
* Introductions per target name: every CONNECT makes the target send probes to the
  caller's addresses, so a flood of them toward one peer would make it a reflector.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.errors import ConfigError
from rendezvous.ratelimit import RateLimit, SourceRateLimiter

__all__ = ["QuotaConfig", "Quotas"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaConfig:
    new_names_per_hour: float = 60.0  # per source, sustained
    new_names_burst: int = 10
    introductions_per_second: float = 5.0  # to one target name, sustained
    introductions_burst: int = 20
    max_tracked: int = 65536  # sources and targets remembered (memory bound)

    def __post_init__(self) -> None:
        if self.new_names_per_hour <= 0 or self.introductions_per_second <= 0:
            raise ConfigError("quota rates must be positive")
        if min(self.new_names_burst, self.introductions_burst, self.max_tracked) < 1:
            raise ConfigError("quota bursts and max_tracked must be at least 1")


class Quotas:
    def __init__(self, config: QuotaConfig) -> None:
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
