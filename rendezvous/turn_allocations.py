"""TURN allocation state (RFC 8656 sections 6-12): allocations by 5-tuple and by relay
address, their permissions and channels, per-user quotas, and the relay ports (random,
reserved for EVEN-PORT pairs, cooling down after use, waiting to be bound or closed).

All of it is bounded by the configuration and swept by the server's timer; expiry is also
checked on every use, so a late sweep never lets traffic through.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import structlog

from rendezvous.ratelimit import source_key
from rendezvous.routes import ClientVia, RelaySocket, address_text
from rendezvous.turn_config import FAILED_PORT_COOLDOWN, PORT_COOLDOWN, TurnConfig
from stunproto import StunMessage
from stunproto.attributes import Address

log = structlog.get_logger()

# (client source, the route it came by): a TCP client and a UDP client with the same address
# and port are different 5-tuples.
FiveTuple = tuple[Address, ClientVia]


@dataclass(slots=True)
class Allocation:
    five_tuple: FiveTuple
    relay: Address
    username: str
    user: str
    key: bytes
    expires: float
    tokens: float  # bandwidth token bucket, bytes
    refilled: float
    relay_via: RelaySocket = field(init=False)
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)  # -> peer, expiry
    channel_of: dict[Address, int] = field(default_factory=dict)  # peer -> channel number
    # (the Allocate request, its success answer) until the adapter has bound the relay
    # socket: no client is told "Allocated" with no socket behind it.
    held: tuple[StunMessage, bytes] | None = None

    def __post_init__(self) -> None:
        self.relay_via = RelaySocket(self.relay)

    def permitted(self, ip: str, now: float) -> bool:
        expires = self.permissions.get(ip)
        return expires is not None and expires > now

    def channel(self, number: int, now: float) -> Address | None:
        bound = self.channels.get(number)
        if bound is None:
            return None
        if bound[1] <= now:
            self.unbind(number)
            return None
        return bound[0]

    def unbind(self, number: int) -> None:
        peer, _ = self.channels.pop(number)
        self.channel_of.pop(peer, None)

    def prune(self, now: float) -> None:
        for ip in [ip for ip, until in self.permissions.items() if until <= now]:
            del self.permissions[ip]
        for number in [n for n, (_, until) in self.channels.items() if until <= now]:
            self.unbind(number)


class AllocationTable:
    def __init__(self, config: TurnConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self.by_five: dict[FiveTuple, Allocation] = {}
        self.by_relay: dict[Address, Allocation] = {}
        self._per_user: dict[str, int] = {}
        self._per_source: dict[str, int] = {}  # source_key of the client's IP -> count
        self._ports: set[int] = set()  # bound, reserved, or waiting in _to_close
        self._reservations: dict[bytes, tuple[int, float]] = {}  # token -> port, expiry
        self._cooling: dict[int, float] = {}  # port -> when it may be reused
        self._to_open: dict[Address, None] = {}  # ordered sets
        self._to_close: dict[Address, None] = {}

    def __len__(self) -> int:
        return len(self.by_five)

    @property
    def busy(self) -> bool:
        """Anything a sweep will have to expire."""
        return bool(self.by_five or self._cooling or self._reservations)

    @property
    def relays_pending(self) -> bool:
        return bool(self._to_open or self._to_close)

    def live(self, five: FiveTuple, now: float) -> Allocation | None:
        """The 5-tuple's allocation, unless it has expired (then it is deleted)."""
        allocation = self.by_five.get(five)
        if allocation is not None and allocation.expires <= now:
            self.delete(allocation, now)
            return None
        return allocation

    def allocations_of(self, user: str) -> int:
        return self._per_user.get(user, 0)

    def allocations_from(self, ip: str) -> int:
        """Live allocations whose clients are at ``ip`` (its IPv4 address, or its /64)."""
        return self._per_source.get(source_key(ip), 0)

    # ------------------------------------------------------------------ ports

    def free_port(self, now: float, *, even: bool = False, pair: bool = False) -> int | None:
        """A random usable relay port; ``even`` for EVEN-PORT, ``pair`` if port + 1 must be
        usable too (EVEN-PORT with the R bit)."""
        ports = self._config.relay_ports
        if len(self._ports) >= len(ports):
            return None

        def free(port: int) -> bool:
            return port in ports and port not in self._ports and self._cooling.get(port, 0.0) <= now

        def usable(port: int) -> bool:
            return (not even or port % 2 == 0) and free(port) and (not pair or free(port + 1))

        # Random ports (RFC 8656 section 7.2 wants them unpredictable), then a scan.
        for _ in range(32):
            port = ports[self._rng.randrange(len(ports))]
            if usable(port):
                return port
        start = self._rng.randrange(len(ports))
        for index in range(len(ports)):
            port = ports[(start + index) % len(ports)]
            if usable(port):
                return port
        return None

    def reserve(self, token: bytes, port: int, until: float) -> None:
        """Keep ``port`` for a later Allocate bearing ``token`` (EVEN-PORT's R bit)."""
        self._reservations[token] = (port, until)
        self._ports.add(port)

    def take_reservation(self, token: bytes, now: float) -> int | None:
        reserved = self._reservations.pop(token, None)
        if reserved is None or reserved[1] <= now:
            if reserved is not None:
                self._ports.discard(reserved[0])
            return None
        return reserved[0]

    # ------------------------------------------------------------------ allocations

    def add(self, allocation: Allocation) -> None:
        """Record a new allocation; its relay socket is to be opened."""
        self.by_five[allocation.five_tuple] = allocation
        self.by_relay[allocation.relay] = allocation
        self._per_user[allocation.user] = self._per_user.get(allocation.user, 0) + 1
        source = _source_of(allocation)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._ports.add(allocation.relay[1])
        self._to_open[allocation.relay] = None

    def delete(self, allocation: Allocation, now: float) -> None:
        five = allocation.five_tuple
        if self.by_five.get(five) is allocation:
            del self.by_five[five]
        self.by_relay.pop(allocation.relay, None)
        _release(self._per_user, allocation.user)
        _release(self._per_source, _source_of(allocation))
        port = allocation.relay[1]
        self._cooling[port] = now + PORT_COOLDOWN
        if allocation.relay in self._to_open:
            del self._to_open[allocation.relay]  # never bound: nothing to close
            self._ports.discard(port)
        else:
            self._to_close[allocation.relay] = None
        log.info("turn_release", user=allocation.user, relay=address_text(allocation.relay))

    def sweep(self, now: float) -> None:
        for allocation in [a for a in self.by_five.values() if a.expires <= now]:
            self.delete(allocation, now)
        for allocation in self.by_five.values():
            allocation.prune(now)
        for token in [t for t, (_, until) in self._reservations.items() if until <= now]:
            port, _ = self._reservations.pop(token)
            self._ports.discard(port)  # reserved, never bound: nothing to close
        for port in [p for p, until in self._cooling.items() if until <= now]:
            del self._cooling[port]

    # ------------------------------------------------------------------ relay sockets

    def relays_to_open(self) -> list[Address]:
        """Relay addresses to bind now (each call returns them once)."""
        opened = list(self._to_open)
        self._to_open.clear()
        return opened

    def relays_to_close(self) -> list[Address]:
        """Relay sockets to close now (each call returns them once)."""
        closed = list(self._to_close)
        self._to_close.clear()
        for _, port in closed:
            self._ports.discard(port)
        return closed

    def relay_failed(self, relay: Address, now: float) -> Allocation | None:
        """The adapter could not bind ``relay``: drop its allocation (returned, if there was
        one) and keep away from that port for a while."""
        allocation = self.by_relay.get(relay)
        if allocation is not None:
            self.delete(allocation, now)
        self._to_close.pop(relay, None)
        self._ports.discard(relay[1])
        self._cooling[relay[1]] = now + FAILED_PORT_COOLDOWN
        return allocation


def _source_of(allocation: Allocation) -> str:
    return source_key(allocation.five_tuple[0][0])


def _release(counts: dict[str, int], key: str) -> None:
    """One fewer under ``key``; the key goes when none are left (bounded tables)."""
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
