"""What kind of NAT sits in front of a lab host."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NatKind(enum.StrEnum):
    """NAT behaviours the lab can emulate (RFC 3489 names, RFC 4787 semantics)."""

    OPEN = "open"  # public address directly on the internet, no NAT at all
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"


@dataclass(frozen=True, kw_only=True)
class NatSpec:
    """Configuration of one NAT router (or "open": no router)."""

    kind: NatKind
    binding_timeout: int = 30
    loss: int = 0
    hairpin: bool = False
    wan_firewall: bool = True

    def __post_init__(self) -> None:
        # Accept plain strings ("full-cone") for convenience at call sites/CLI.
        object.__setattr__(self, "kind", NatKind(self.kind))
        if self.binding_timeout < 1:
            raise ValueError("binding_timeout must be >= 1 second")
        if not 0 <= self.loss <= 100:
            raise ValueError("loss must be a percentage 0..100")

    def router_env(self) -> dict[str, str]:
        """Environment for router.sh (the single source of truth for rules)."""
        if self.kind is NatKind.OPEN:
            raise ValueError("an open host has no router")
        return {
            "NAT_TYPE": self.kind.value,
            "BINDING_TIMEOUT": str(self.binding_timeout),
            "LOSS": str(self.loss),
            "HAIRPIN": "1" if self.hairpin else "0",
            "WAN_FIREWALL": "1" if self.wan_firewall else "0",
        }
