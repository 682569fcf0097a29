"""What natprobe concludes: RFC 4787/5780 behaviours, the classic RFC 3489 type, and the
pure functions that derive them from test results (no I/O, so every case is unit-tested)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stunproto.attributes import Address


class Behaviour(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class NatType(StrEnum):
    OPEN_INTERNET = "open-internet"
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    SYMMETRIC = "symmetric"
    SYMMETRIC_UDP_FIREWALL = "symmetric-udp-firewall"
    UDP_BLOCKED = "udp-blocked"
    UNKNOWN = "unknown"


def mapping_behaviour(
    first: Address, to_alternate_ip: Address | None, to_alternate_both: Address | None
) -> Behaviour | None:
    """RFC 5780 section 4.3 from the mapped addresses of tests I, II and III."""
    if to_alternate_ip is None:
        return None
    if to_alternate_ip == first:
        return Behaviour.ENDPOINT_INDEPENDENT
    if to_alternate_both is None:
        return None
    if to_alternate_both == to_alternate_ip:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT


def filtering_behaviour(
    change_both_answered: bool | None, change_port_answered: bool | None
) -> Behaviour | None:
    """RFC 5780 section 4.4; None means the test could not run."""
    if change_both_answered is None:
        return None
    if change_both_answered:
        return Behaviour.ENDPOINT_INDEPENDENT
    if change_port_answered is None:
        return None
    if change_port_answered:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT


def classic_type(
    *,
    reachable: bool,
    behind_nat: bool | None,
    mapping_independent: bool | None,
    filtering: Behaviour | None,
) -> NatType:
    """The RFC 3489 section 10.1 classification, expressed through RFC 4787 behaviours."""
    if not reachable:
        return NatType.UDP_BLOCKED
    if behind_nat is None:
        return NatType.UNKNOWN
    if not behind_nat:
        if filtering is None:
            return NatType.UNKNOWN
        if filtering is Behaviour.ENDPOINT_INDEPENDENT:
            return NatType.OPEN_INTERNET
        return NatType.SYMMETRIC_UDP_FIREWALL
    if mapping_independent is None:
        return NatType.UNKNOWN
    if not mapping_independent:
        return NatType.SYMMETRIC
    return {
        Behaviour.ENDPOINT_INDEPENDENT: NatType.FULL_CONE,
        Behaviour.ADDRESS_DEPENDENT: NatType.RESTRICTED_CONE,
        Behaviour.ADDRESS_AND_PORT_DEPENDENT: NatType.PORT_RESTRICTED_CONE,
        None: NatType.UNKNOWN,
    }[filtering]


def mapping_independence(
    mapping: Behaviour | None, two_servers: bool | None, *, behind_nat: bool
) -> bool | None:
    """Whether the mapping is endpoint-independent: from the RFC 5780 mapping test when it
    reached a verdict, else from comparing two servers' answers (None: neither could
    tell). Without a NAT nothing is mapped: independent."""
    if not behind_nat:
        return True
    if mapping is None:
        return two_servers
    return mapping is Behaviour.ENDPOINT_INDEPENDENT


def mapping_verdict(
    mapping: Behaviour | None, two_servers: bool | None, *, behind_nat: bool
) -> tuple[Behaviour | None, bool | None]:
    """The report's ``mapping`` and ``mapping_endpoint_independent``, which always agree:
    endpoint-independent exactly when independent is True (without a NAT, and when two
    servers saw one mapping, the mapping is endpoint-independent too); a dependent mapping
    is not independent; two servers that saw different mappings say "not independent"
    only, so ``mapping`` stays None beside False."""
    independent = mapping_independence(mapping, two_servers, behind_nat=behind_nat)
    if independent:
        return Behaviour.ENDPOINT_INDEPENDENT, True
    return mapping, independent


def _endpoint(address: Address | None) -> str | None:
    if address is None:
        return None
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatReport:
    server: Address
    local_address: Address | None
    public_address: Address | None
    mapping: Behaviour | None
    # Two plain STUN servers tell EIM from "not EIM" only; kept apart from ``mapping``.
    mapping_endpoint_independent: bool | None
    filtering: Behaviour | None
    hairpin: bool | None
    binding_lifetime: float | None
    binding_lifetime_is_lower_bound: bool = False
    nat_type: NatType
    # Test name -> why it could not run (said plainly to the user).
    skipped: dict[str, str] = field(default_factory=dict)
    rtt_ms: float | None = None
    duration_ms: float | None = None
    # Set when the server answered neither over UDP nor over TCP (then nothing else is
    # known, and nat_type is unknown): why, as "UDP: ...; TCP: ...". When TCP connects but
    # UDP gets no answer, this stays None and nat_type is udp-blocked.
    server_unreachable: str | None = None

    def __post_init__(self) -> None:
        independent = self.mapping_endpoint_independent
        if self.mapping is not None and (self.mapping is Behaviour.ENDPOINT_INDEPENDENT) != (
            independent is True
        ):
            raise ValueError(f"mapping {self.mapping} disagrees with independent={independent}")
        if self.mapping is None and independent is True:
            raise ValueError("an endpoint-independent mapping must say so in mapping")

    def to_json(self) -> dict[str, Any]:
        return {
            "server": _endpoint(self.server),
            "public_address": _endpoint(self.public_address),
            "local_address": _endpoint(self.local_address),
            "mapping": None if self.mapping is None else str(self.mapping),
            "mapping_endpoint_independent": self.mapping_endpoint_independent,
            "filtering": None if self.filtering is None else str(self.filtering),
            "hairpin": self.hairpin,
            "binding_lifetime": self.binding_lifetime,
            "binding_lifetime_is_lower_bound": self.binding_lifetime_is_lower_bound,
            "nat_type": str(self.nat_type),
            "skipped": dict(self.skipped),
            "rtt_ms": self.rtt_ms,
            "duration_ms": self.duration_ms,
            "server_unreachable": self.server_unreachable,
        }

    def to_table(self) -> str:
        def show(value: object) -> str:
            if value is None:
                return "unknown"
            if isinstance(value, bool):
                return "yes" if value else "no"
            return str(value)

        lifetime = show(self.binding_lifetime)
        if self.binding_lifetime is not None:
            lifetime = f"{'>= ' if self.binding_lifetime_is_lower_bound else ''}{lifetime} s"
        mapping = show(self.mapping)
        if self.mapping is None and self.mapping_endpoint_independent is False:
            mapping = "not endpoint-independent (address or port dependent)"
        rows = [
            ("NAT type (RFC 3489)", str(self.nat_type)),
            ("public address", show(_endpoint(self.public_address))),
            ("local address", show(_endpoint(self.local_address))),
            ("mapping", mapping),
            ("filtering", show(self.filtering)),
            ("hairpinning", show(self.hairpin)),
            ("binding lifetime", lifetime),
            ("server", show(_endpoint(self.server))),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"not run: {test}: {why}" for test, why in self.skipped.items()]
        return "\n".join(lines)
