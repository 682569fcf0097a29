"""Which path a session's channel uses, and when it moves.

A path is a route to the peer (peer.routes) and its kind: LAN (one of the peer's private
endpoints), DIRECT (punched through the NATs) or RELAY (the peer's relay allocation, or our
own). The rules, each against a way of getting it wrong:

* paths rank LAN over DIRECT over RELAY. An authenticated, fresh packet from a better
  route moves the channel there at once, so that both sides settle on the same kind of
  path and say so once; from a route of the same kind only once the current one has been
  quiet for ``roam_after`` (the peer's NAT rebound); from a worse one only once the
  current one has been silent for ``failover_after`` (the peer has not noticed yet that
  the better path works);
* on the relay, direct packets must keep coming from the same route for ``stable_for``
  before the channel moves back (no flapping);
* on a direct path, data unanswered for ``failover_after`` (or silence for a few
  keepalive intervals) makes the session probe the relay, if there is one; the relay's
  answer (an authenticated packet over it) moves the channel: a relay path is never
  chosen unless it was proven alive;
* on the relay, keepalives go to the last proven direct route every ``repunch_interval``,
  doubling up to ``repunch_max``, so that our NAT keeps a way open for the direct path to
  come back.

Replayed packets never get here: the channel's window refuses them, and a repeated
handshake answer moves nothing by itself (peer.session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from peer.events import PathKind
from peer.routes import DIRECT, RELAY, Route, Via
from peer.session_config import SessionConfig
from rvproto.messages import Introduction
from stunproto.attributes import Address


@dataclass(slots=True)
class NetworkPath:
    """One route to the peer, as aioquic's ``QuicNetworkPath`` keeps one per address."""

    route: Route
    kind: PathKind
    validated_at: float | None = None  # an authenticated packet proved it both ways
    # Last authenticated packet that came over it (the guard that keeps a worse path from
    # pulling a working one away).
    last_received: float = -math.inf


# Which kind of path is better: a move to a better one happens at once.
_RANK = {PathKind.RELAY: 0, PathKind.DIRECT: 1, PathKind.LAN: 2}


class PathSelector:
    """The current path, the last proven direct one, and the rules that move between them."""

    __slots__ = (
        "_direct_seen",
        "_failover_after",
        "_private",
        "_public",
        "_repunch_gap",
        "_repunch_interval",
        "_repunch_max",
        "_roam_after",
        "_stable_for",
        "current",
        "direct",
        "relay_route",
        "repunch_at",
    )

    def __init__(self, config: SessionConfig, introduction: Introduction) -> None:
        self._failover_after = config.failover_after
        self._stable_for = config.stable_for
        self._roam_after = config.roam_after
        self._repunch_interval = config.repunch_interval
        self._repunch_max = config.repunch_max
        self._private = introduction.private_endpoints
        self._public = introduction.public_endpoint
        relayed = introduction.relayed_endpoint
        # The peer's relay allocation, reached from our punching socket.
        self.relay_route = Route(relayed, DIRECT) if relayed is not None else None
        self.current: NetworkPath | None = None
        self.direct: Route | None = None  # last proven direct (or LAN) route
        self._direct_seen: tuple[Route, float] | None = None  # direct route, since when
        self.repunch_at: float | None = None
        self._repunch_gap = config.repunch_interval

    def kind_of(self, route: Route) -> PathKind:
        if route.via == RELAY or route == self.relay_route:
            return PathKind.RELAY
        # A host with a public address reports it as private too: that is not a LAN path.
        address = route.address
        if route.via == DIRECT and address in self._private and address != self._public:
            return PathKind.LAN
        return PathKind.DIRECT

    def use(self, route: Route, now: float | None = None) -> NetworkPath:
        """Make ``route`` the current path (``now``: proven at that time)."""
        path = self.current = NetworkPath(route, self.kind_of(route), now)
        if now is not None:
            path.last_received = now
        if path.kind is not PathKind.RELAY:
            self.direct = route
        return path

    def heard(self, address: Address, via: Via, now: float) -> None:
        """An authenticated packet came from ``address`` over ``via``: if over the current
        path, it has carried something now."""
        current = self.current
        if current is not None and current.route.matches(address, via):
            current.last_received = now

    def should_move(self, route: Route, now: float) -> bool:
        """An authenticated, fresh packet came over ``route``, not the current path: move?"""
        current = self.current
        assert current is not None  # only a connected session roams
        kind = self.kind_of(route)
        if kind is PathKind.RELAY and current.kind is PathKind.RELAY:
            return False  # the peer answers through the other relay route: both work, keep ours
        if current.kind is PathKind.RELAY:
            # Direct packets while on the relay: the direct path is back, but only trust it
            # once it has kept working for a while (no flapping).
            seen = self._direct_seen
            if seen is None or seen[0] != route:
                self._direct_seen = (route, now)
                return False
            return now >= seen[1] + self._stable_for
        rank, current_rank = _RANK[kind], _RANK[current.kind]
        if rank > current_rank:
            return True  # a better path (LAN over direct): at once, so both sides agree
        if rank == current_rank:
            # The same kind from elsewhere (the peer's NAT rebound, or a second LAN
            # address): only once the current route has gone quiet.
            return now >= current.last_received + self._roam_after
        # A worse path (the relay, or direct while on the LAN) only once the current one
        # has been silent long enough to count as broken: the peer has not noticed yet
        # that the better path works.
        return now >= current.last_received + self._failover_after

    def switch(self, route: Route, now: float) -> NetworkPath:
        """Move to ``route`` now (roaming, failover): schedules re-punching on the relay."""
        path = self.use(route, now)
        self._direct_seen = None
        path.last_received = now  # just proven: a worse path must not pull us back at once
        if path.kind is PathKind.RELAY and self.direct is not None:
            # Both sides re-punch: each keeps its own NAT open toward the other.
            self._repunch_gap = self._repunch_interval
            self.repunch_at = now + self._repunch_gap
        else:
            self.repunch_at = None
        return path

    def failover_at(self, oldest_unacked: float | None, silent_at: float | None) -> float | None:
        """When the current direct path counts as broken, given when the oldest
        unacknowledged message went out and when the path counts as silent."""
        current = self.current
        if current is None or current.kind is PathKind.RELAY or self.relay_route is None:
            return None
        unacked_at = None if oldest_unacked is None else oldest_unacked + self._failover_after
        return min((t for t in (unacked_at, silent_at) if t is not None), default=None)

    def repunch(self, now: float) -> Route:
        """Time to re-punch: the route to send to; the next time is later (backoff)."""
        assert self.direct is not None  # scheduled only with a direct route to go back to
        self._repunch_gap = min(self._repunch_gap * 2, self._repunch_max)
        self.repunch_at = now + self._repunch_gap
        return self.direct
