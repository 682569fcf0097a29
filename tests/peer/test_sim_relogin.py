"""Staying reachable, in the in-process simulator: the rendezvous restarts (down for a while,
then a fresh core with empty state on the same address), and the peers log in again,
allocate on the relay again, stay reachable for new connections, and keep the sessions
they had; a peer whose NAT gives it a new mapping logs in again from there."""

from __future__ import annotations

import random

from peer.events import (
    Allocated,
    AllocationExpired,
    Connected,
    MessageReceived,
    Offline,
    Online,
    SessionClosed,
)
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.turn_config import TurnConfig
from tests.support.sim import SERVER, SimPeer, World, build_world
from tests.support.sim_server import SERVER_STATIC, TURN_SECRET, WALL_OFFSET, RendezvousApp


def restart_server(world: World, *, down_for: float, seed: int = 99) -> None:
    """The server process dies (its sockets close, its relay allocations with it), stays
    down ``down_for`` seconds, and a new one starts on the same address knowing nobody."""
    old = world.server
    net = world.net
    for relay_socket in list(old.relays.values()):
        net.unbind(relay_socket)
    net.unbind(old)
    net.run_for(down_for)
    relay = old.core.turn is not None
    core = RendezvousCore(
        RendezvousConfig(stun=StunServiceConfig(primary=SERVER), server_key=SERVER_STATIC),
        NameRegistry(),
        turn=TurnConfig(realm="sim", shared_secret=TURN_SECRET, relay_ip=SERVER[0])
        if relay
        else None,
        random_bytes=random.Random(seed).randbytes,
        wall_offset=WALL_OFFSET,
    )
    world.server = RendezvousApp(core, net, old.host)
    old.host.bind(world.server, SERVER[1])


def count(peer: SimPeer, kind: type) -> int:
    return sum(isinstance(event, kind) for event in peer.poll())


def connect(world: World, since: int = 0) -> bool:
    """Alice connects to Bob; True once both sides report a connection (after ``since``
    earlier ones)."""
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    return world.net.run_until(
        lambda: count(world.a, Connected) > since and count(world.b, Connected) > since,
        timeout=10,
    )


def test_after_a_restart_both_log_in_again_and_can_be_connected_to() -> None:
    world = build_world("port-restricted-cone", "restricted-cone", relay=True)
    assert world.login()
    assert world.net.run_until(lambda: world.a.has(Allocated) and world.b.has(Allocated), timeout=5)
    restart_server(world, down_for=30.0)  # longer than a refresh's retransmissions
    peers = (world.a, world.b)
    assert world.net.run_until(lambda: all(p.has(Online) for p in peers), timeout=120)
    for peer in peers:
        assert count(peer, Offline) == 1 and count(peer, Online) == 1
        assert world.server.core.introductions.online(peer.name, world.net.now) is not None
    # A new peer-to-peer connection goes through the new server.
    assert connect(world)
    # The relay: the old allocations died with the server; each peer noticed at its
    # re-login (a refresh answered 437), allocated again, and told the new server.
    assert world.net.run_until(lambda: all(count(p, Allocated) == 2 for p in peers), timeout=10)
    for peer in peers:
        assert count(peer, AllocationExpired) == 1
        turn = peer.agent.turn
        assert turn is not None and turn.relayed is not None
        registration = world.server.core.introductions.online(peer.name, world.net.now)
        assert registration is not None and registration.relayed == turn.relayed
    # Nothing more to report while nothing changes.
    world.net.run_for(120.0)
    for peer in peers:
        assert count(peer, Offline) == 1 and count(peer, Online) == 1


def test_a_session_outlives_the_servers_restart() -> None:
    world = build_world("full-cone", "port-restricted-cone")
    assert world.login()
    assert connect(world)
    restart_server(world, down_for=10.0)
    assert world.net.run_until(lambda: world.a.has(Online) and world.b.has(Online), timeout=120)
    world.a.agent.send("bob", b"still here", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.b.has(MessageReceived), timeout=5)
    assert world.b.first(MessageReceived) == MessageReceived("alice", b"still here")
    assert not world.a.has(SessionClosed) and not world.b.has(SessionClosed)


def test_a_new_mapping_is_logged_in_again_and_reachable() -> None:
    world = build_world("symmetric", "full-cone")  # random ports: a new mapping is new
    assert world.login()
    before = world.a.agent.rendezvous.public_endpoint
    world.net.nats["nat-alice"].flush()  # the router rebooted: every mapping is gone
    assert world.net.run_until(lambda: world.a.has(Online), timeout=60)
    online = world.a.first(Online)
    assert isinstance(online, Online) and online.public_endpoint != before
    assert world.a.agent.rendezvous.public_endpoint == online.public_endpoint
    assert not world.a.has(Offline)
    registration = world.server.core.introductions.online("alice", world.net.now)
    assert registration is not None and registration.endpoint == online.public_endpoint
    # Bob reaches her where she is now.
    world.b.agent.connect("alice", world.net.now)
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(Connected) and world.b.has(Connected), timeout=10
    )
