"""Every NAT combination in the in-process simulator: login, introduction, simultaneous
punch, Noise handshake, messages both ways -- in milliseconds of real time."""

from __future__ import annotations

import pytest

from peer.birthday import BirthdayConfig
from peer.errors import LocalProtocolError
from peer.events import Connected, ConnectFailed, MessageReceived, PathKind, SessionClosed
from peer.identity import Identity
from peer.known_peers import KnownPeers, Verdict
from peer.rendezvous_client import RendezvousClientConfig
from peer.routes import ExtraSocket
from peer.session import SessionConfig
from tests.support.sim import IMPOSSIBLE, KINDS, SERVER, build_world

PAIRS = [(a, b) for a in KINDS for b in KINDS]


@pytest.mark.parametrize(("kind_a", "kind_b"), PAIRS, ids=lambda k: str(k))
def test_every_pair(kind_a: str, kind_b: str) -> None:
    world = build_world(kind_a, kind_b, session=SessionConfig(punch_timeout=2.0))
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()

    def settled() -> bool:
        return all(p.has(Connected) or p.has(SessionClosed) for p in (world.a, world.b))

    assert world.net.run_until(settled, timeout=10)
    if (kind_a, kind_b) in IMPOSSIBLE:
        closed = world.a.first(SessionClosed)
        assert isinstance(closed, SessionClosed) and "no direct path" in closed.reason
        assert not world.a.has(Connected)
        return
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.DIRECT
    world.a.agent.send("bob", b"hello bob", world.net.now)
    world.b.agent.send("alice", b"hello alice", world.net.now)
    world.net.wake()
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(MessageReceived) and world.b.has(MessageReceived), timeout=5
    )
    assert world.b.first(MessageReceived) == MessageReceived("alice", b"hello bob")
    assert world.a.first(MessageReceived) == MessageReceived("bob", b"hello alice")


@pytest.mark.parametrize("rtt", [0.02, 0.1, 0.3])
def test_connect_time_is_about_one_round_trip(rtt: float) -> None:
    world = build_world("port-restricted-cone", "port-restricted-cone", rtt=rtt)
    assert world.login()
    started = world.net.now
    world.a.agent.connect("bob", started)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected), timeout=10)
    elapsed = world.net.now - started
    # CONNECT round trip to the server (rtt/2 here), the synchronised start, then the
    # handshake: a couple of round trips, never a retransmission timeout.
    assert elapsed < 3 * rtt + 0.1, elapsed


def test_unknown_peer_is_a_clear_error() -> None:
    world = build_world("full-cone", "full-cone")
    assert world.login()
    world.a.agent.connect("carol", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(ConnectFailed), timeout=5)
    failed = world.a.first(ConnectFailed)
    assert isinstance(failed, ConnectFailed)
    assert failed.code == 404 and "unknown or offline" in failed.reason


def test_same_nat_uses_the_lan() -> None:
    world = build_world("port-restricted-cone", "port-restricted-cone", same_nat=True)
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected) and world.b.has(Connected), timeout=5)
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.LAN


def test_loss_reliable_ordered_delivery() -> None:
    world = build_world("port-restricted-cone", "restricted-cone", loss=10, seed=7)
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(Connected) and world.b.has(Connected), timeout=10
    )
    for i in range(100):
        world.a.agent.send("bob", f"a{i}".encode(), world.net.now)
        world.b.agent.send("alice", f"b{i}".encode(), world.net.now)
    world.net.wake()
    world.net.wake()

    def received(peer: object) -> list[bytes]:
        return [e.data for e in peer.poll() if isinstance(e, MessageReceived)]  # type: ignore[attr-defined]

    assert world.net.run_until(
        lambda: len(received(world.a)) == 100 and len(received(world.b)) == 100, timeout=60
    )
    assert received(world.b) == [f"a{i}".encode() for i in range(100)]
    assert received(world.a) == [f"b{i}".encode() for i in range(100)]


def test_a_changed_key_is_refused_loudly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    known = KnownPeers(tmp_path / "known_peers")
    known.remember("bob", Identity.generate().public_key)  # pinned on an earlier day
    world = build_world("full-cone", "full-cone", known_peers={"alice": known})
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(SessionClosed), timeout=5)
    closed = world.a.first(SessionClosed)
    assert isinstance(closed, SessionClosed)
    assert "bob" in closed.reason and "changed" in closed.reason.lower()
    assert not world.a.has(Connected)
    # The pin is kept: a changed key never silently replaces it.
    assert known.check("bob", world.b.agent.config.rendezvous.public_key) is Verdict.CHANGED


def test_first_contact_pins_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    known = KnownPeers(tmp_path / "known_peers")
    world = build_world("full-cone", "open", known_peers={"alice": known})
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected), timeout=5)
    bob_key = world.b.agent.config.rendezvous.public_key
    server_key = world.a.agent.rendezvous.server_key
    assert server_key is not None
    # Pinned for the server that introduced it (a name means something at one server),
    # and the server's own key with it.
    assert known.check("bob", bob_key, server_key) is Verdict.MATCH
    assert known.check("bob", Identity.generate().public_key, bytes(32)) is Verdict.NEW
    assert known.server_key(f"{SERVER[0]}:{SERVER[1]}") == server_key


NO_BIRTHDAY = SessionConfig(birthday=BirthdayConfig(sockets=0, probes=0))
NO_BIRTHDAY_QUICK = SessionConfig(birthday=BirthdayConfig(sockets=0, probes=0), punch_timeout=1.0)


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [
        ("symmetric", "symmetric"),
        ("symmetric", "port-restricted-cone"),
        ("port-restricted-cone", "symmetric"),
    ],
    ids=str,
)
def test_relay_when_no_direct_path_exists(kind_a: str, kind_b: str) -> None:
    # Symmetric against port-restricted with the birthday trick turned off: the relay.
    world = build_world(kind_a, kind_b, relay=True, rtt=0.05, session=NO_BIRTHDAY)
    assert world.login()
    # Both allocate on the embedded relay and tell the rendezvous.
    assert world.net.run_until(
        lambda: all(p.agent.rendezvous.relayed is not None for p in (world.a, world.b)),
        timeout=5,
    )
    started = world.net.now
    world.a.agent.connect("bob", started)
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(Connected) and world.b.has(Connected), timeout=10
    )
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.RELAY
    if (kind_a, kind_b) == ("symmetric", "symmetric"):
        # Hopeless without port prediction: relayed at once, and said so.
        assert world.net.now - started < 0.5
        connected = world.a.first(Connected)
        assert isinstance(connected, Connected) and "symmetric" in connected.note
    else:
        # Within about a second of the decision (relay_after = 1 s of fruitless punching,
        # 2 s when the birthday trick gets its chance first).
        assert world.net.now - started < 2.5
    world.a.agent.send("bob", b"over the relay", world.net.now)
    world.b.agent.send("alice", b"and back", world.net.now)
    world.net.wake()
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(MessageReceived) and world.b.has(MessageReceived), timeout=5
    )
    assert world.b.first(MessageReceived) == MessageReceived("alice", b"over the relay")
    assert world.a.first(MessageReceived) == MessageReceived("bob", b"and back")


def test_relay_offered_but_direct_path_preferred() -> None:
    world = build_world("port-restricted-cone", "port-restricted-cone", relay=True, rtt=0.05)
    assert world.login()
    assert world.net.run_until(
        lambda: all(p.agent.rendezvous.relayed is not None for p in (world.a, world.b)),
        timeout=5,
    )
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected) and world.b.has(Connected), timeout=5)
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.DIRECT


@pytest.mark.parametrize("confined", ["alice", "bob"])
def test_a_peer_that_can_only_reach_the_relay_still_connects(confined: str) -> None:
    # A peer whose UDP reaches nothing but the rendezvous and its relay (in the lab and in
    # real life: TURN over TCP) sends everything through its allocation.
    world = build_world(
        "port-restricted-cone",
        "port-restricted-cone",
        relay=True,
        relay_only=frozenset({confined}),
        rtt=0.05,
    )
    assert world.login()
    assert world.net.run_until(
        lambda: all(p.agent.rendezvous.relayed is not None for p in (world.a, world.b)),
        timeout=5,
    )
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(Connected) and world.b.has(Connected), timeout=10
    )
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.RELAY
    world.a.agent.send("bob", b"ping", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.b.has(MessageReceived), timeout=5)


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [("symmetric", "port-restricted-cone"), ("port-restricted-cone", "symmetric")],
    ids=str,
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_birthday_trick_punches_symmetric_against_port_restricted(
    kind_a: str, kind_b: str, seed: int
) -> None:
    world = build_world(kind_a, kind_b, relay=True, rtt=0.05, seed=seed)
    assert world.login()
    assert world.net.run_until(
        lambda: all(p.agent.rendezvous.relayed is not None for p in (world.a, world.b)),
        timeout=5,
    )
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected) and world.b.has(Connected), timeout=5)
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.DIRECT
    hard = world.a if kind_a == "symmetric" else world.b
    hard_connected = hard.first(Connected)
    assert isinstance(hard_connected, Connected)
    assert isinstance(hard_connected.via, ExtraSocket)  # through an extra socket
    world.a.agent.send("bob", b"birthday", world.net.now)
    world.b.agent.send("alice", b"paradox", world.net.now)
    world.net.wake()
    assert world.net.run_until(
        lambda: world.a.has(MessageReceived) and world.b.has(MessageReceived), timeout=5
    )
    assert world.b.first(MessageReceived) == MessageReceived("alice", b"birthday")
    assert world.a.first(MessageReceived) == MessageReceived("bob", b"paradox")


@pytest.mark.parametrize("hard_initiates", [True, False])
def test_port_prediction_against_a_sequential_symmetric_nat(hard_initiates: bool) -> None:
    kinds = ("sequential-symmetric", "port-restricted-cone")
    # A budget of just the predicted ports: success proves the prediction, not luck.
    prediction_only = SessionConfig(birthday=BirthdayConfig(probes=64))
    world = build_world(
        *(kinds if hard_initiates else kinds[::-1]), rtt=0.05, session=prediction_only
    )
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(Connected) and world.b.has(Connected), timeout=5)
    for peer in (world.a, world.b):
        connected = peer.first(Connected)
        assert isinstance(connected, Connected) and connected.path is PathKind.DIRECT


def test_an_introduction_no_handshake_proved_pins_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Two symmetric NATs and no relay: introduced, but no handshake ever completes. The
    # rendezvous's word alone (which a forged introduction would be) pins no key.
    known = KnownPeers(tmp_path / "known_peers")
    world = build_world(
        "symmetric", "symmetric", known_peers={"alice": known}, session=NO_BIRTHDAY_QUICK
    )
    assert world.login()
    world.a.agent.connect("bob", world.net.now)
    world.net.wake()
    assert world.net.run_until(lambda: world.a.has(SessionClosed), timeout=10)
    assert not world.a.has(Connected)
    bob_key = world.b.agent.config.rendezvous.public_key
    assert known.check("bob", bob_key, world.a.agent.rendezvous.server_key) is Verdict.NEW
    assert KnownPeers(tmp_path / "known_peers").items() == []  # (the server's key only)


def test_a_name_is_folded_and_a_look_alike_refused_before_login() -> None:
    server = ("192.0.2.1", 3478)
    config = RendezvousClientConfig(server=server, name="Bob", public_key=bytes(32))
    assert config.name == "bob"
    with pytest.raises(LocalProtocolError, match="mixes scripts"):  # (a Cyrillic "o")
        RendezvousClientConfig(server=server, name="b\u043eb", public_key=bytes(32))
