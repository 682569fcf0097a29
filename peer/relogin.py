"""Staying reachable at the rendezvous, sans-I/O: once a peer has logged in, a lost
registration (a refresh unanswered or refused, a server that restarted and forgot us, the
TCP connection to it closed) is followed by another login after an exponential backoff
with jitter, for as long as the peer runs. Each change is reported once: ``Offline`` when
the registration is lost, ``Online`` when a login succeeds again (or under a new public
mapping); failed attempts in between only push the next one further out.

The rendezvous client (peer.rendezvous_client) asks this object what to do and when; it
never sends anything itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from peer.errors import LocalProtocolError
from peer.events import Offline, Online
from stunproto.attributes import Address


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffConfig:
    """Delays between login attempts: ``first``, times ``factor`` after each failure, at
    most ``maximum``; each one drawn uniformly within ``jitter`` (a fraction) of that, so
    that peers a restarted server lost all at once do not come back all at once."""

    first: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.maximum:
            raise LocalProtocolError("backoff needs 0 < first <= maximum")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise LocalProtocolError("backoff needs factor >= 1 and 0 <= jitter < 1")


class Backoff:
    def __init__(self, config: BackoffConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        self._nominal = config.first

    @property
    def nominal(self) -> float:
        """The next delay before jitter."""
        return self._nominal

    def next_delay(self) -> float:
        config = self.config
        delay = self._nominal * self._rng.uniform(1 - config.jitter, 1 + config.jitter)
        self._nominal = min(config.maximum, self._nominal * config.factor)
        return delay

    def reset(self) -> None:
        self._nominal = self.config.first


class Reachability:
    """Whether we are registered at the rendezvous and, after a loss, when to try again."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self.ever_online = False  # before the first login, start-up decides (peer.startup)
        self.online = False
        self.endpoint: Address | None = None  # our public endpoint, as last reported
        self.retry_at: float | None = None  # when the next login attempt is due

    def logged_in(self, endpoint: Address) -> Online | None:
        """A login succeeded: ``Online`` when that is news (back after an ``Offline``, or
        a new public mapping), None for the first login and for nothing new."""
        first = not self.ever_online
        news = not self.online or endpoint != self.endpoint
        self.ever_online = self.online = True
        self.endpoint = endpoint
        self.retry_at = None
        self._backoff.reset()
        return None if first or not news else Online(endpoint)

    def lost(self, reason: str, now: float) -> Offline | None:
        """The registration is gone or a login attempt failed: the next attempt is
        scheduled; ``Offline`` if we were online until now (once per loss)."""
        delay = self._backoff.next_delay()
        self.retry_at = now + delay
        if not self.online:
            return None
        self.online = False
        return Offline(reason, delay)

    def due(self, now: float) -> bool:
        """Whether the scheduled login attempt is due (then it is no longer scheduled)."""
        if self.retry_at is None or now < self.retry_at:
            return False
        self.retry_at = None
        return True
