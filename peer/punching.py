"""Punching toward one peer: where to (candidates, learned peer-reflexive ones, the peer's
relay allocation), how often (a fast burst, then a slower tail, until a deadline), and the
birthday trick for the one NAT pair plain punching cannot do (peer.birthday).

The burst covers the common case, both sides starting together on the rendezvous's
schedule; the slow tail lets a side whose introduction was delayed by loss still meet the
other; the deadline bounds it all. Probes (0xA4) carry nothing, so anyone can send one:
only probes from the peer's own IPs count, each route is answered at most once per punch
interval, and at most ``MAX_LEARNED_CANDIDATES`` new routes are learnt from them.
"""

from __future__ import annotations

import random

from natprobe.report import NatType
from peer.birthday import Birthday, BirthdayRole, role_for
from peer.routes import RELAY, Route, Transmit
from peer.session_config import SessionConfig
from rvproto.messages import Introduction

MAX_LEARNED_CANDIDATES = 4
_NAT_TYPES = {str(member): member for member in NatType}


def nat_type_of(text: str) -> NatType:
    """The NAT type a peer reported (free text on the wire): unknown text is UNKNOWN."""
    return _NAT_TYPES.get(text, NatType.UNKNOWN)


class Punching:
    __slots__ = (
        "_birthday",
        "_config",
        "_deadline",
        "_learned",
        "_peer_ips",
        "_probe_answered",
        "_relay_after",
        "_started",
        "_ticks",
        "candidates",
        "hopeless",
        "next_at",
    )

    def __init__(
        self,
        config: SessionConfig,
        introduction: Introduction,
        rng: random.Random,
        now: float,
        *,
        own_nat_type: NatType,
        relay_only: bool,
    ) -> None:
        self._config = config
        self.next_at: float | None = now + introduction.punch_delay
        self._ticks = 0
        self._started: float | None = None  # the first punch tick
        self._deadline: float | None = None
        # LAN candidates first: on one LAN they answer first and win.
        self.candidates: tuple[Route, ...] = (
            *(Route(address) for address in introduction.private_endpoints),
            Route(introduction.public_endpoint),
        )
        other_nat_type = nat_type_of(introduction.nat_type)
        # Two symmetric NATs with random ports cannot be punched without prediction: go to
        # the relay at once instead of after a second of hopeless punching, and say so. (A
        # relay-only peer punches nothing at all: it is not that case.)
        self.hopeless = (
            not relay_only
            and own_nat_type is NatType.SYMMETRIC
            and other_nat_type is NatType.SYMMETRIC
        )
        self._relay_after = 0.0 if self.hopeless else config.relay_after
        # A relay-only peer sends everything through its allocation: no birthday trick (its
        # extra sockets could not reach anyone).
        role = BirthdayRole.NONE if relay_only else role_for(own_nat_type, other_nat_type)
        self._birthday = Birthday(config.birthday, role, introduction.public_endpoint, rng)
        if role is not BirthdayRole.NONE:
            # Give the spray its chance before the relay takes the channel.
            self._relay_after = max(self._relay_after, 2 * config.relay_after)
        self._learned = 0  # peer-reflexive candidates added from the responder's probes
        self._probe_answered: dict[Route, float] = {}
        self._peer_ips = frozenset(
            address[0]
            for address in (
                introduction.public_endpoint,
                *introduction.private_endpoints,
                *((introduction.relayed_endpoint,) if introduction.relayed_endpoint else ()),
            )
        )

    # ------------------------------------------------------------------ unauthenticated input

    @property
    def relay_note(self) -> str:
        """Why the channel is on the relay, when that is worth saying."""
        if self.hopeless:
            return "both NATs are symmetric: no direct path without port prediction, relaying"
        return ""

    def known_ip(self, route: Route) -> bool:
        """Does ``route`` lead to the peer (its public or private IPs, or our relay)? An
        unauthenticated packet from anywhere else gets nothing from us."""
        if route.via == RELAY:
            return True  # through our own allocation, which permits only the peer's IPs
        return route.address[0] in self._peer_ips

    def learn(self, route: Route) -> bool:
        """A probe came over ``route`` (from a known IP): punch there too (a symmetric NAT
        in front of the responder sends from a port the server never saw). False when too
        many routes were learnt already."""
        if route in self.candidates:
            return True
        if self._learned >= MAX_LEARNED_CANDIDATES:
            return False
        self._learned += 1
        self.candidates = (*self.candidates, route)
        return True

    def answer_probe(self, route: Route, now: float) -> bool:
        """Answer a probe over ``route`` now? At most once per punch interval."""
        last = self._probe_answered.get(route)
        if last is None or now >= last + self._config.punch_interval:
            self._probe_answered[route] = now
            return True
        return False

    # ------------------------------------------------------------------ schedule

    def start(self, now: float) -> None:
        self.next_at = now

    def stop(self) -> None:
        self.next_at = None

    def tick(self, now: float) -> bool:
        """A punch tick begins: False (and punching stops) once the deadline has passed."""
        if self._deadline is None:
            self._started = now
            self._deadline = now + self._config.punch_timeout
        if now >= self._deadline:
            self.next_at = None
            return False
        self._ticks += 1
        return True

    def schedule_next(self, now: float) -> None:
        config = self._config
        fast = self._ticks < config.punch_burst
        self.next_at = now + (config.punch_interval if fast else config.punch_slow_interval)

    # ------------------------------------------------------------------ what to send

    def burst(
        self, packet: bytes, now: float, relay: Route | None, *, birthday: bool
    ) -> list[Transmit]:
        """One tick's worth: ``packet`` to every candidate, to ``relay`` (the peer's relay
        allocation; None: not now) once direct punching has had its chance, and (with
        ``birthday``) what the birthday trick adds, nothing for most NAT pairs."""
        routes = self.candidates
        if relay is not None and self._relay_due(now):
            routes = (*routes, relay)
        out = [(packet, route.address, route.via) for route in routes]
        if birthday:
            out += self._birthday.extra(packet)
        return out

    def _relay_due(self, now: float) -> bool:
        started = self._started
        return started is not None and now >= started + self._relay_after
