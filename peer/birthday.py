"""Birthday-paradox punching (and port prediction) for a symmetric NAT against a
port-restricted cone, as Tailscale's "How NAT traversal works" describes.

The hard side (behind the symmetric NAT) sends from many sockets, so its NAT opens many
random public ports toward the easy side's one mapping; the easy side (endpoint-independent
mapping, so one public port whatever the destination) sprays probes at random ports of the
hard side's public IP, each opening its filter for that port. With 256 hard-side ports and
2048 probes over 64,512 ports, a collision (a probe that is also an open mapping) is all
but certain: 1 - (1 - 256/64512)^2048 > 99.9%. Counts and rates are bounded and
configurable; punching stops at the first success like any other.

Sans-I/O: datagrams for the hard side's extra sockets go out with the route
``ExtraSocket(i)`` beside the destination (peer.routes), which the I/O adapter turns into
"send from extra socket i"; what arrives on such a socket comes back with the same route,
so a session that connects through socket i keeps answering through it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from natprobe.report import NatType
from peer.routes import DIRECT, ExtraSocket, Transmit
from stunproto.attributes import Address


@dataclass(frozen=True, slots=True, kw_only=True)
class BirthdayConfig:
    sockets: int = 256  # hard side: extra sockets, each a fresh random mapping
    probes: int = 2048  # easy side: probes to random ports, in all
    batch: int = 128  # easy side: probes per punch tick
    resend_every: int = 5  # hard side: punch ticks between sends from every socket
    # Easy side, first: the ports right after the hard side's mapping the server saw. A
    # symmetric NAT that allocates sequentially gives the hard side's new sockets exactly
    # those (port prediction); against random allocation they cost 64 probes of the budget.
    predict: int = 64
    ports: range = field(default_factory=lambda: range(1024, 65536))


class BirthdayRole(Enum):
    NONE = "none"
    HARD = "hard"  # we are behind the symmetric NAT
    EASY = "easy"  # we are behind the port-restricted cone


def role_for(own_nat: NatType, other_nat: NatType) -> BirthdayRole:
    """Only the pair that plain punching cannot do and the birthday trick can."""
    if own_nat is NatType.SYMMETRIC and other_nat is NatType.PORT_RESTRICTED_CONE:
        return BirthdayRole.HARD
    if own_nat is NatType.PORT_RESTRICTED_CONE and other_nat is NatType.SYMMETRIC:
        return BirthdayRole.EASY
    return BirthdayRole.NONE


class Birthday:
    def __init__(
        self,
        config: BirthdayConfig,
        role: BirthdayRole,
        other_public: Address,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.role = role
        self._target = other_public
        self._rng = rng
        self._ticks = 0
        self.sent = 0  # probes sent so far (easy side)
        # Built once: the hard side sends from every socket each few ticks.
        self._sockets = (
            tuple(ExtraSocket(i) for i in range(config.sockets))
            if role is BirthdayRole.HARD
            else ()
        )

    def extra(self, packet: bytes) -> list[Transmit]:
        """What to send in addition to ordinary punching at this punch tick."""
        tick, self._ticks = self._ticks, self._ticks + 1
        config = self.config
        if self.role is BirthdayRole.HARD:
            if tick % config.resend_every:
                return []
            return [(packet, self._target, via) for via in self._sockets]
        if self.role is BirthdayRole.EASY and self.sent < config.probes:
            if tick == 0 and config.predict:
                base = self._target[1]
                ports = [p for p in range(base + 1, base + 1 + config.predict) if p in config.ports]
            else:
                count = min(config.batch, config.probes - self.sent)
                ports = self._rng.sample(config.ports, count)
            ports = ports[: config.probes - self.sent]
            self.sent += len(ports)
            return [(packet, (self._target[0], port), DIRECT) for port in ports]
        return []
