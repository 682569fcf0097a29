"""The path rules on their own (peer.paths): which route an authenticated packet may move
the channel to, and when failover and re-punching are due."""

from __future__ import annotations

import math

from peer.events import PathKind
from peer.paths import PathSelector
from peer.routes import DIRECT, RELAY, ExtraSocket, Route
from peer.session import SessionConfig
from rvproto.messages import Introduction, Role

PUBLIC = ("198.51.100.2", 40002)
PRIVATE = ("10.0.2.3", 40002)
RELAYED = ("203.0.113.10", 50000)
CONFIG = SessionConfig(failover_after=2.0, stable_for=1.0, repunch_interval=1.0, repunch_max=4.0)


def selector() -> PathSelector:
    intro = Introduction(
        name="bob",
        public_key=bytes(32),
        public_endpoint=PUBLIC,
        private_endpoints=(PRIVATE, PUBLIC),  # a public host lists its address as private too
        role=Role.INITIATOR,
        token=bytes(16),
        punch_delay=0.0,
        nat_type="full-cone",
        relayed_endpoint=RELAYED,
    )
    return PathSelector(CONFIG, intro)


def test_the_kind_follows_from_the_route() -> None:
    paths = selector()
    assert paths.kind_of(Route(PRIVATE)) is PathKind.LAN
    assert paths.kind_of(Route(PUBLIC)) is PathKind.DIRECT  # listed as private, yet public
    assert paths.kind_of(Route(RELAYED)) is PathKind.RELAY  # the peer's allocation
    assert paths.kind_of(Route(PUBLIC, RELAY)) is PathKind.RELAY  # through ours
    assert paths.kind_of(Route(PRIVATE, ExtraSocket(3))) is PathKind.DIRECT


def test_the_relay_does_not_pull_back_a_just_proven_direct_path() -> None:
    paths = selector()
    paths.switch(Route(PUBLIC), 10.0)
    assert not paths.should_move(Route(RELAYED), 10.0 + 1.9)
    assert paths.should_move(Route(RELAYED), 10.0 + 2.0)
    paths.heard(PUBLIC, DIRECT, 11.5)  # the direct path carried something again
    assert not paths.should_move(Route(RELAYED), 12.0)


def test_back_from_the_relay_only_once_the_direct_path_kept_working() -> None:
    paths = selector()
    paths.switch(Route(RELAYED), 0.0)
    assert not paths.should_move(Route(PUBLIC), 5.0)  # first seen
    assert not paths.should_move(Route(PUBLIC), 5.9)
    assert not paths.should_move(Route(PRIVATE), 6.0)  # another route starts over
    assert not paths.should_move(Route(PRIVATE), 6.5)
    assert paths.should_move(Route(PRIVATE), 7.0)
    assert not paths.should_move(Route(PUBLIC, RELAY), 8.0)  # relay to relay: keep ours


def test_failover_needs_a_relay_and_a_direct_path() -> None:
    paths = selector()
    assert paths.failover_at(1.0, None) is None  # no path yet
    paths.use(Route(PUBLIC), 0.0)
    assert paths.failover_at(None, None) is None
    assert paths.failover_at(1.0, 40.0) == 3.0
    assert paths.failover_at(None, 40.0) == 40.0
    paths.switch(Route(RELAYED), 5.0)
    assert paths.failover_at(1.0, 40.0) is None


def test_repunching_backs_off_to_its_ceiling_and_stops_off_the_relay() -> None:
    paths = selector()
    paths.use(Route(PUBLIC, ExtraSocket(7)), 0.0)
    paths.switch(Route(RELAYED), 10.0)
    assert paths.repunch_at == 11.0
    times = []
    for _ in range(4):
        assert paths.repunch_at is not None
        at = paths.repunch_at
        assert paths.repunch(at) == Route(PUBLIC, ExtraSocket(7))  # the way it worked
        times.append(at)
    assert times == [11.0, 13.0, 17.0, 21.0]  # 1, 2, 4, then the 4 s ceiling
    paths.switch(Route(PUBLIC), 30.0)
    assert paths.repunch_at is None
    assert paths.current is not None and paths.current.last_received == 30.0
    assert paths.current.validated_at == 30.0 and not math.isinf(paths.current.last_received)


def test_route_matches_without_building_one() -> None:
    route = Route(PUBLIC, ExtraSocket(2))
    assert route.matches(PUBLIC, ExtraSocket(2))
    assert not route.matches(PUBLIC, ExtraSocket(3))
    assert not route.matches(PUBLIC, DIRECT)
    assert Route(PUBLIC).matches(PUBLIC, DIRECT)
