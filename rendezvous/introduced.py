"""Which peers each name was introduced to lately: the embedded TURN relay's peer policy, so
that the credentials every logged-in peer gets make a relay between introduced peers, not an
open proxy to the whole internet.

A CONNECT introduces two names (``IntroductionService._connect``); each may then install
TURN permissions for the other's public IP, the one it logged in from (the login's challenge
proved that address), for ``window`` seconds after the introduction. Each permission granted
renews the window (a relayed session keeps refreshing its permissions), and the TURN server
lets a live permission be refreshed whatever this table says. Addresses a peer declares
itself (its private endpoints, the relayed endpoint a REFRESH reports) are not trusted here:
anyone could declare anyone's. A relayed endpoint on this server is at the server's own IP,
which the TURN server judges by its own rule (relaying to its own IP only at relay ports).

Bounded: ``max_per_name`` IPs per name (its oldest go first) and ``max_entries`` in all (the
least recently active names go first); a name whose window has passed is swept on the next
introduction, from the front of an activity-ordered table (amortised O(1)).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_WINDOW = 600.0  # seconds after an introduction (or the last permission granted)


@dataclass(slots=True)
class _Introduced:
    ips: dict[str, float] = field(default_factory=dict)  # peer IP -> until, oldest first
    until: float = 0.0  # the latest of them: the name's entry is dead after this


class IntroducedPeers:
    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        *,
        max_entries: int = 250_000,
        max_per_name: int = 16,
    ) -> None:
        if window <= 0 or max_entries < 1 or max_per_name < 1:
            raise ValueError("need a positive window and bounds")
        self.window = window
        self.max_entries = max_entries
        self.max_per_name = max_per_name
        self._names: dict[str, _Introduced] = {}  # least recently active first
        self._entries = 0

    def __len__(self) -> int:
        """How many (name, IP) entries are held (some may have expired, not yet swept)."""
        return self._entries

    def introduce(
        self,
        a: str,
        b: str,
        addresses_of_b: Iterable[str],
        addresses_of_a: Iterable[str],
        now: float,
    ) -> None:
        """``a`` and ``b`` were introduced: each may reach the other's IPs for a while."""
        self._sweep(now)
        self._add(a, addresses_of_b, now)
        self._add(b, addresses_of_a, now)
        self._bound()

    def permits(self, name: str, ip: str, now: float) -> bool:
        """Whether ``name`` was introduced to a peer at ``ip`` within the window; if so the
        window starts again (the permission is in use)."""
        entry = self._names.get(name)
        if entry is None:
            return False
        key = _normal(ip)
        until = entry.ips.get(key)
        if until is None or until <= now:
            return False
        entry.ips[key] = entry.until = now + self.window
        self._names[name] = self._names.pop(name)  # most recently active last
        return True

    # ------------------------------------------------------------------ bookkeeping

    def _add(self, name: str, ips: Iterable[str], now: float) -> None:
        entry = self._names.pop(name, None) or _Introduced()
        self._names[name] = entry
        until = now + self.window
        for ip in ips:
            key = _normal(ip)
            if entry.ips.pop(key, None) is None:
                self._entries += 1
            entry.ips[key] = until
        entry.until = until
        while len(entry.ips) > self.max_per_name:
            del entry.ips[next(iter(entry.ips))]
            self._entries -= 1
        if not entry.ips:
            del self._names[name]

    def _bound(self) -> None:
        while self._entries > self.max_entries:
            name, entry = next(iter(self._names.items()))
            del entry.ips[next(iter(entry.ips))]  # (a name in the table has an entry)
            self._entries -= 1
            if not entry.ips:
                del self._names[name]

    def _sweep(self, now: float) -> None:
        """Forget the names whose windows have all passed (they are at the front)."""
        names = self._names
        while names:
            name, entry = next(iter(names.items()))
            if entry.until > now:
                return
            del names[name]
            self._entries -= len(entry.ips)


def _normal(ip: str) -> str:
    """One spelling per address (``::ffff:192.0.2.1`` is ``192.0.2.1``)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)
