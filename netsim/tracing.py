"""What happened to every datagram: counters always, a full event trace on request."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from netsim.app import Address


class DropReason(enum.StrEnum):
    LOSS = "loss"  # random link loss
    NO_ROUTE = "no-route"  # destination IP is nowhere on the path (e.g. a private IP)
    PORT_UNREACHABLE = "port-unreachable"  # host reached, nothing bound on that port
    NO_BINDING = "no-binding"  # unsolicited inbound: no (live) NAT mapping on that port
    FILTERED = "filtered"  # mapping exists but its filtering rejects the source
    HAIRPIN_DISABLED = "hairpin-disabled"  # inside host sent to its own NAT's public IP
    PORTS_EXHAUSTED = "ports-exhausted"  # NAT could not allocate an external port
    UDP_BLOCKED = "udp-blocked"  # the NAT (firewall) drops all UDP
    PARTITIONED = "partitioned"  # the internet between two public IPs is cut (a test's doing)
    QUEUE_FULL = "queue-full"  # a bottleneck's drop-tail queue had no room (netsim.link)


class TraceKind(enum.StrEnum):
    SEND = "send"  # left an app; src/dst as the app sees them
    NAT_OUT = "nat-out"  # after outbound translation at ``where``
    NAT_IN = "nat-in"  # after inbound translation at ``where``
    HAIRPIN = "hairpin"  # after hairpin translation at ``where``
    DELIVER = "deliver"  # handed to an app
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class TraceEvent:
    time: float
    kind: TraceKind
    packet: int  # id assigned at send, stable across the packet's whole path
    where: str  # host or NAT name
    src: Address
    dst: Address
    reason: DropReason | None = None

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.time:10.6f} #{self.packet:<6} {self.kind:<8} {self.where:<12} "
            f"{self.src[0]}:{self.src[1]} -> {self.dst[0]}:{self.dst[1]}{why}"
        )


@dataclass(slots=True)
class Stats:
    sent: int = 0
    delivered: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)
    # Per (node name, reason), to tell which NAT or link ate the packets.
    dropped_at: Counter[tuple[str, DropReason]] = field(default_factory=Counter)

    @property
    def in_flight(self) -> int:
        return self.sent - self.delivered - sum(self.dropped.values())
