"""The embedded relay's peer policy: TURN permissions only for the peers a user was introduced
to lately (rendezvous.introduced), 403 for any other address; the table's bounds; and the
rendezvous core wiring it from CONNECT to CreatePermission."""

from __future__ import annotations

import random

import pytest

from peer.identity import Identity
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introduced import IntroducedPeers
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.turn_config import PERMISSION_LIFETIME
from rendezvous.turn_server import TurnServer
from stunproto import AttrType, MessageClass, Method, StunMessage
from tests.rendezvous.test_introductions import ALICE_AT, BOB_AT, SERVER, Wire, logged_in
from tests.rendezvous.test_turn_server import (
    PEER,
    RELAY_IP,
    Address,
    Client,
    _code,
    _config,
    _relayed,
)

STRANGER = ("192.0.2.77", 9999)


def _permit(client: Client, *peers: Address, now: float = 0.0) -> StunMessage:
    return client.call(
        Method.CREATE_PERMISSION, *((AttrType.XOR_PEER_ADDRESS, p) for p in peers), now=now
    )


def _bind(client: Client, number: int, peer: Address, now: float = 0.0) -> StunMessage:
    return client.call(
        Method.CHANNEL_BIND,
        (AttrType.CHANNEL_NUMBER, number),
        (AttrType.XOR_PEER_ADDRESS, peer),
        now=now,
    )


def _policed(window: float = 600.0) -> tuple[TurnServer, IntroducedPeers, Client, Address]:
    table = IntroducedPeers(window)
    server = TurnServer(_config(), peer_policy=table.permits)
    client = Client(server)
    answer = client.allocate()
    assert answer.message_class is MessageClass.SUCCESS
    return server, table, client, _relayed(answer)


# ---------------------------------------------------------------------- the table


def test_an_introduction_permits_each_side_the_others_addresses_only() -> None:
    table = IntroducedPeers(600.0)
    table.introduce("alice", "bob", ["192.0.2.2"], ["192.0.2.1"], 0.0)
    assert table.permits("alice", "192.0.2.2", 1.0)
    assert table.permits("bob", "192.0.2.1", 1.0)
    assert not table.permits("alice", "192.0.2.1", 1.0)  # not her own address
    assert not table.permits("alice", "192.0.2.3", 1.0)
    assert not table.permits("carol", "192.0.2.2", 1.0)
    # One spelling per address: an IPv4-mapped IPv6 address is the IPv4 one.
    assert table.permits("alice", "::ffff:192.0.2.2", 1.0)


def test_the_window_passes_and_is_renewed_by_use() -> None:
    table = IntroducedPeers(100.0)
    table.introduce("alice", "bob", ["192.0.2.2"], ["192.0.2.1"], 0.0)
    assert table.permits("alice", "192.0.2.2", 90.0)  # in use: until 190 now
    assert table.permits("alice", "192.0.2.2", 180.0)
    assert not table.permits("bob", "192.0.2.1", 100.0)  # bob's was not used: gone
    assert not table.permits("alice", "192.0.2.2", 280.0)
    # A new introduction starts a new window.
    table.introduce("alice", "bob", ["192.0.2.2"], ["192.0.2.1"], 300.0)
    assert table.permits("bob", "192.0.2.1", 350.0)


def test_memory_is_bounded_per_name_in_all_and_swept() -> None:
    table = IntroducedPeers(100.0, max_entries=50, max_per_name=4)
    for n in range(10):  # alice introduced to ten peers: her four latest are kept
        table.introduce("alice", f"peer{n}", [f"192.0.2.{n}"], ["198.51.100.1"], float(n))
    assert [table.permits("alice", f"192.0.2.{n}", 10.0) for n in range(10)] == [False] * 6 + [
        True
    ] * 4
    assert len(table) == 4 + 10
    for n in range(100):  # many names: at most 50 entries, the least recently active go
        table.introduce(f"x{n}", f"y{n}", ["203.0.113.2"], ["203.0.113.1"], 20.0)
    assert len(table) == 50
    assert table.permits("x99", "203.0.113.2", 21.0)
    assert not table.permits("x0", "203.0.113.2", 21.0)
    # Once their windows pass, the next introduction sweeps every stale name away.
    table.introduce("late", "comer", ["192.0.2.200"], ["192.0.2.201"], 500.0)
    assert len(table) == 2


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        IntroducedPeers(0.0)
    with pytest.raises(ValueError):
        IntroducedPeers(10.0, max_per_name=0)


# ---------------------------------------------------------------------- the TURN server


def test_a_permission_for_an_introduced_peer_is_granted_and_relays_both_ways() -> None:
    server, table, client, relay = _policed()
    table.introduce("alice", "bob", [PEER[0]], [client.source[0]], 0.0)
    assert _permit(client, PEER).message_class is MessageClass.SUCCESS
    (out,) = client.indication(PEER, b"hi", 1.0)
    assert (out.data, out.destination) == (b"hi", PEER)
    (back,) = server.handle_relayed(relay, b"yo", PEER, 1.0)
    assert back.destination == client.source
    assert _bind(client, 0x4000, PEER, now=1.0).message_class is MessageClass.SUCCESS


def test_a_permission_or_channel_for_anyone_else_is_403_and_relays_nothing() -> None:
    server, table, client, relay = _policed()
    table.introduce("alice", "bob", [PEER[0]], [client.source[0]], 0.0)
    refused = _permit(client, STRANGER)
    assert _code(refused) == 403 and refused.check_integrity(client.key)
    assert _code(_permit(client, PEER, STRANGER)) == 403  # all or nothing
    assert _code(_bind(client, 0x4001, STRANGER)) == 403
    assert client.indication(STRANGER, b"x", 1.0) == []
    assert client.indication(PEER, b"x", 1.0) == []  # (the refused request installed none)
    assert server.handle_relayed(relay, b"x", STRANGER, 1.0) == []
    # Someone else's introduction is not alice's.
    table.introduce("carol", "dave", [STRANGER[0]], ["198.51.100.99"], 2.0)
    assert _code(_permit(client, STRANGER, now=2.0)) == 403


def test_after_the_window_a_new_permission_is_refused_but_a_live_one_is_refreshed() -> None:
    window = 100.0
    _, table, client, _ = _policed(window)
    other = ("192.0.2.10", 1)
    table.introduce("alice", "bob", [PEER[0], other[0]], [client.source[0]], 0.0)
    assert _permit(client, PEER, now=50.0).message_class is MessageClass.SUCCESS
    # The table forgot alice's introduction (nothing used it since 50 + 100)...
    assert not table.permits("alice", PEER[0], 200.0)
    # ...but the permission it granted is alive and may be refreshed while in use.
    assert _permit(client, PEER, now=200.0).message_class is MessageClass.SUCCESS
    assert _code(_permit(client, other, now=200.0)) == 403  # a new one is not
    # Once the permission lapsed too, it is refused like any other.
    assert _code(_permit(client, PEER, now=200.0 + PERMISSION_LIFETIME + 1)) == 403


def test_the_servers_own_relay_addresses_need_no_introduction() -> None:
    # A relayed endpoint on this server: relay to relay, where only relay ports are reached.
    _, _, client, _ = _policed()
    assert _permit(client, (RELAY_IP, 50005)).message_class is MessageClass.SUCCESS
    assert _code(_permit(client, STRANGER)) == 403


# ---------------------------------------------------------------------- the core's wiring


def _core(**turn: object) -> RendezvousCore:
    rng = random.Random(7)
    return RendezvousCore(
        RendezvousConfig(stun=StunServiceConfig(primary=SERVER)),
        NameRegistry(),
        turn=_config(**turn),
        random_bytes=rng.randbytes,
    )


def test_a_connect_lets_both_sides_create_permissions_for_each_other_only() -> None:
    core = _core()
    assert core.turn is not None and core.introduced is not None
    wire = Wire(core)
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    # Both logged in, not introduced: the relay is no proxy to each other (or anyone).
    at_alice = Client(core.turn, source=ALICE_AT, name="alice")
    at_bob = Client(core.turn, source=BOB_AT, name="bob")
    for client in (at_alice, at_bob):
        assert client.allocate().message_class is MessageClass.SUCCESS
    assert _code(_permit(at_alice, BOB_AT)) == 403
    alice.connect("bob", wire.now)
    wire.run()
    assert _permit(at_alice, BOB_AT).message_class is MessageClass.SUCCESS
    assert _permit(at_bob, ALICE_AT).message_class is MessageClass.SUCCESS
    assert _code(_permit(at_alice, STRANGER)) == 403
    # Ten minutes on, with nothing used since, a new permission needs a new introduction.
    late = 600.0 + PERMISSION_LIFETIME + 1
    at_alice.call(Method.REFRESH, (AttrType.LIFETIME, 3600), now=500.0)
    assert _code(_permit(at_alice, BOB_AT, now=late)) == 403


def test_the_policy_can_be_turned_off_and_is_absent_without_an_embedded_relay() -> None:
    core = _core(introduced_peers_window=None)
    assert core.turn is not None and core.introduced is None
    client = Client(core.turn)
    assert client.allocate().message_class is MessageClass.SUCCESS
    assert _permit(client, STRANGER).message_class is MessageClass.SUCCESS
    bare = RendezvousCore(RendezvousConfig(stun=StunServiceConfig(primary=SERVER)), NameRegistry())
    assert bare.introduced is None
