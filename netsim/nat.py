"""RFC 4787 NAT behaviour: mapping, filtering, port allocation, binding lifetime, hairpin.

:class:`NatTable` is the pure translation logic (no topology, no events): the network asks
it to translate one packet at a time, at the virtual time the packet crosses the NAT.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from netsim.app import Address
from netsim.tracing import DropReason

Behaviour = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent"]
PortAllocation = Literal["preserve", "sequential", "random"]

_BEHAVIOURS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
_ALLOCATIONS = ("preserve", "sequential", "random")
# Random allocation tries this many draws before scanning, so a nearly full table still
# finds the last free port instead of looping.
_RANDOM_TRIES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class NatConfig:
    mapping: Behaviour = "endpoint-independent"
    filtering: Behaviour = "endpoint-independent"
    port_allocation: PortAllocation = "preserve"
    binding_timeout: float = 30.0
    hairpin: bool = False
    refresh_on_inbound: bool = True
    # Inclusive range of external ports; a small range makes exhaustion testable.
    port_range: tuple[int, int] = (1024, 65535)
    # A firewall that drops all UDP both ways (no translation happens at all).
    block_udp: bool = False

    def __post_init__(self) -> None:
        if self.mapping not in _BEHAVIOURS or self.filtering not in _BEHAVIOURS:
            raise ValueError(f"mapping and filtering must be one of {_BEHAVIOURS}")
        if self.port_allocation not in _ALLOCATIONS:
            raise ValueError(f"port_allocation must be one of {_ALLOCATIONS}")
        if self.binding_timeout <= 0:
            raise ValueError("binding_timeout must be positive")
        lo, hi = self.port_range
        if not 1 <= lo <= hi <= 65535:
            raise ValueError("port_range must be 1 <= lo <= hi <= 65535")

    # The classic (RFC 3489) kinds, as RFC 4787 combinations.
    @classmethod
    def full_cone(cls, **kw: object) -> NatConfig:
        return cls._kind("endpoint-independent", "endpoint-independent", "preserve", kw)

    @classmethod
    def restricted_cone(cls, **kw: object) -> NatConfig:
        return cls._kind("endpoint-independent", "address-dependent", "preserve", kw)

    @classmethod
    def port_restricted_cone(cls, **kw: object) -> NatConfig:
        return cls._kind("endpoint-independent", "address-and-port-dependent", "preserve", kw)

    @classmethod
    def symmetric(cls, **kw: object) -> NatConfig:
        return cls._kind("address-and-port-dependent", "address-and-port-dependent", "random", kw)

    @classmethod
    def udp_blocked(cls, **kw: object) -> NatConfig:
        return cls._kind("endpoint-independent", "endpoint-independent", "preserve", kw, True)

    @classmethod
    def _kind(
        cls,
        mapping: Behaviour,
        filtering: Behaviour,
        allocation: PortAllocation,
        overrides: dict[str, object],
        block_udp: bool = False,
    ) -> NatConfig:
        fields: dict[str, object] = {
            "mapping": mapping,
            "filtering": filtering,
            "port_allocation": allocation,
            "block_udp": block_udp,
        }
        fields.update(overrides)  # e.g. symmetric(port_allocation="sequential", hairpin=True)
        return cls(**fields)  # type: ignore[arg-type]


# Mapping key: inside endpoint, plus remote IP / remote port when the mapping depends on them.
_Key = tuple[Address, str | None, int | None]


@dataclass(slots=True, eq=False)
class Binding:
    internal: Address
    external: Address
    key: _Key
    last_active: float
    # Remote endpoints the inside endpoint has sent to through this mapping; filtering
    # admits inbound traffic only from these (APDF) or their IPs (ADF).
    sent_to: set[Address] = field(default_factory=set)
    sent_to_ips: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A read-only snapshot of a live binding, for tests and debugging."""

    internal: Address
    external: Address
    remote: tuple[str | None, int | None]  # what the mapping is keyed on besides internal
    last_active: float
    expires: float
    permitted: frozenset[Address]


class NatTable:
    def __init__(self, config: NatConfig, public_ip: str, rng: random.Random) -> None:
        self.config = config
        self.public_ip = public_ip
        self._rng = rng
        self._by_key: dict[_Key, Binding] = {}
        self._by_port: dict[int, Binding] = {}
        self._last_port = config.port_range[0] - 1

    def flush(self) -> None:
        """Forget every binding (a NAT reboot). The sequential cursor survives, as in a
        router whose counter lives on; tests that want a fresh counter make a new NAT."""
        self._by_key.clear()
        self._by_port.clear()

    def bindings(self, now: float) -> list[BindingInfo]:
        live = [b for b in self._by_port.values() if self._alive(b, now)]
        timeout = self.config.binding_timeout
        return [
            BindingInfo(
                b.internal,
                b.external,
                (b.key[1], b.key[2]),
                b.last_active,
                b.last_active + timeout,
                frozenset(b.sent_to),
            )
            for b in sorted(live, key=lambda b: b.external[1])
        ]

    def outbound(self, src: Address, dst: Address, now: float) -> Address | DropReason:
        """Translate an inside->outside packet; return the external source to use."""
        if self.config.block_udp:
            return DropReason.UDP_BLOCKED
        key = self._key(src, dst)
        binding = self._by_key.get(key)
        if binding is not None and not self._alive(binding, now):
            self._evict(binding)
            binding = None
        if binding is None:
            port = self._allocate(src[1], now)
            if port is None:
                return DropReason.PORTS_EXHAUSTED
            binding = Binding(src, (self.public_ip, port), key, now)
            self._by_key[key] = binding
            self._by_port[port] = binding
        binding.last_active = now
        binding.sent_to.add(dst)
        binding.sent_to_ips.add(dst[0])
        return binding.external

    def inbound(self, src: Address, dst_port: int, now: float) -> Address | DropReason:
        """Translate an outside->inside packet to ``public_ip:dst_port``; return the inside
        endpoint to deliver to, or why the packet is dropped."""
        if self.config.block_udp:
            return DropReason.UDP_BLOCKED
        binding = self._by_port.get(dst_port)
        if binding is None:
            return DropReason.NO_BINDING
        if not self._alive(binding, now):
            self._evict(binding)
            return DropReason.NO_BINDING
        filtering = self.config.filtering
        if (filtering == "address-dependent" and src[0] not in binding.sent_to_ips) or (
            filtering == "address-and-port-dependent" and src not in binding.sent_to
        ):
            return DropReason.FILTERED
        if self.config.refresh_on_inbound:
            binding.last_active = now
        return binding.internal

    def _key(self, src: Address, dst: Address) -> _Key:
        mapping = self.config.mapping
        if mapping == "endpoint-independent":
            return (src, None, None)
        if mapping == "address-dependent":
            return (src, dst[0], None)
        return (src, dst[0], dst[1])

    def _alive(self, binding: Binding, now: float) -> bool:
        # Idle for exactly binding_timeout counts as expired.
        return now - binding.last_active < self.config.binding_timeout

    def _evict(self, binding: Binding) -> None:
        del self._by_key[binding.key]
        del self._by_port[binding.external[1]]

    def _free(self, port: int, now: float) -> bool:
        binding = self._by_port.get(port)
        if binding is None:
            return True
        if self._alive(binding, now):
            return False
        self._evict(binding)
        return True

    def _allocate(self, inside_port: int, now: float) -> int | None:
        lo, hi = self.config.port_range
        allocation = self.config.port_allocation
        port: int | None = None
        if allocation == "preserve" and lo <= inside_port <= hi and self._free(inside_port, now):
            port = inside_port
        elif allocation == "random":
            for _ in range(_RANDOM_TRIES):
                candidate = self._rng.randint(lo, hi)
                if self._free(candidate, now):
                    port = candidate
                    break
            else:
                port = self._scan(self._rng.randint(lo, hi), now)
        else:
            # Sequential, and preserve's fallback: the next free port after the last one
            # handed out, so a peer can predict the next mapping (port prediction).
            port = self._scan(self._last_port + 1, now)
        if port is not None:
            self._last_port = port
        return port

    def _scan(self, start: int, now: float) -> int | None:
        lo, hi = self.config.port_range
        size = hi - lo + 1
        for i in range(size):
            port = lo + (start - lo + i) % size
            if self._free(port, now):
                return port
        return None
