"""The sans-I/O rendezvous protocol, through the rendezvous core: login with a challenge
and a Noise handshake, ownership of names, replay protection, introductions with a punch schedule,
bounded state and small answers."""

from __future__ import annotations

import random

import pytest

from peer.events import ConnectFailed, Introduced, LoggedIn, LoginFailed
from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.quotas import QuotaConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import TcpConnection, Transmit, UdpSocket
from rvproto.messages import Role, RvAttr, RvMethod, parse_rv, rv_message
from stunproto import AttrType, MessageClass
from stunproto.attributes import Address
from stunproto.message import new_transaction_id

SERVER = ("203.0.113.10", 3478)
ALICE_AT = ("198.51.100.1", 40001)
BOB_AT = ("198.51.100.2", 40002)
VIA = UdpSocket(SERVER)


def make_service(registry: NameRegistry | None = None, **kw: object) -> RendezvousCore:
    rng = random.Random(5)
    return RendezvousCore(
        RendezvousConfig(stun=StunServiceConfig(primary=SERVER), **kw),  # type: ignore[arg-type]
        registry or NameRegistry(),
        random_bytes=rng.randbytes,
    )


def exchange(
    core: RendezvousCore, data: bytes, source: Address, now: float
) -> tuple[Transmit | None, list[Transmit]]:
    """One datagram from ``source`` on the primary socket: (the answer to it, if any, and
    what else the core sent: introductions)."""
    core.receive_datagram(data, source, VIA, now)
    answers, others = [], []
    for transmit in core.datagrams_to_send(now):
        (answers if transmit.destination == source else others).append(transmit)
    assert len(answers) <= 1 and all(t.via == VIA for t in answers)
    return (answers[0] if answers else None), others


def handle(core: RendezvousCore, data: bytes, source: Address, now: float) -> Transmit | None:
    return exchange(core, data, source, now)[0]


class Wire:
    """Carries datagrams between one service and clients, instantly, recording them."""

    def __init__(self, service: RendezvousCore) -> None:
        self.service = service
        self.clients: dict[Address, RendezvousClient] = {}
        self.captured: list[tuple[bytes, Address]] = []  # client -> server datagrams
        self.sent: list[Transmit] = []  # server -> client
        self.vias: dict[Address, UdpSocket | TcpConnection] = {}  # how each client talks
        self.now = 0.0

    def client(self, name: str, identity: Identity, at: Address) -> RendezvousClient:
        config = RendezvousClientConfig(
            server=SERVER, name=name, public_key=identity.public_key, private_endpoints=(at,)
        )
        client = RendezvousClient(config, identity.x25519_private)
        self.clients[at] = client
        return client

    def run(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            for at, client in self.clients.items():
                for data, destination in client.datagrams_to_send(self.now):
                    assert destination == SERVER
                    self.captured.append((data, at))
                    self.service.receive_datagram(data, at, self.vias.get(at, VIA), self.now)
                    moved = True
            for reply in self.service.datagrams_to_send(self.now):  # answers, introductions
                self.sent.append(reply)
                self.deliver(reply.data, reply.destination)
                moved = True
            if not moved:
                return

    def deliver(self, data: bytes, destination: Address) -> None:
        client = self.clients.get(destination)
        if client is not None:
            client.receive_datagram(data, SERVER, self.now)


def events(client: RendezvousClient) -> list[object]:
    found = []
    while (event := client.next_event()) is not None:
        found.append(event)
    return found


def logged_in(wire: Wire, name: str, identity: Identity, at: Address) -> RendezvousClient:
    client = wire.client(name, identity, at)
    client.login(wire.now)
    wire.run()
    assert any(isinstance(e, LoggedIn) for e in events(client))
    return client


def test_login_records_observed_and_private_endpoints() -> None:
    service = make_service()
    wire = Wire(service)
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    assert client.public_endpoint == ALICE_AT
    registration = service.online("alice", wire.now)
    assert registration is not None
    assert registration.endpoint == ALICE_AT
    assert registration.private_endpoints == (ALICE_AT,)


def test_first_key_owns_the_name_even_across_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "names.sqlite"
    owner = Identity.generate()
    first = NameRegistry(path)
    wire = Wire(make_service(first))
    logged_in(wire, "bob", owner, BOB_AT)
    first.close()  # (a stopping server writes the names it has queued)
    # A restarted server (same database) still knows who owns "bob".
    registry = NameRegistry(path)
    restarted = Wire(make_service(registry))
    impostor = restarted.client("bob", Identity.generate(), ALICE_AT)
    impostor.login(0.0)
    restarted.run()
    failures = [e for e in events(impostor) if isinstance(e, LoginFailed)]
    assert failures and failures[0].code == 403
    assert "another key" in failures[0].reason
    logged_in(restarted, "bob", owner, BOB_AT)  # the owner still can
    registry.close()


def test_replayed_login_is_refused_from_anywhere() -> None:
    service = make_service()
    wire = Wire(service)
    logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    registration = service.online("alice", wire.now)
    assert registration is not None
    session_key = registration.session_key
    signed = [data for data, _ in wire.captured if parse_rv(data).get(RvAttr.HANDSHAKE)]
    assert len(signed) == 1
    # From elsewhere: the challenge was never issued there. From the same address after
    # the retransmission window: the challenge was used.
    for source, when, code in ((("192.0.2.66", 6666), 1.0, 401), (ALICE_AT, 45.0, 438)):
        reply = handle(service, signed[0], source, wire.now + when)
        assert reply is not None
        error = parse_rv(reply.data).get(AttrType.ERROR_CODE)
        assert error is not None and error.code == code, error
    # Nothing about the registration changed.
    assert registration.session_key == session_key and registration.endpoint == ALICE_AT


def test_a_handshake_with_another_key_is_refused() -> None:
    service = make_service()
    wire = Wire(service)
    honest = Identity.generate()
    # Claim someone's public key, handshake with our own static key.
    client = RendezvousClient(
        RendezvousClientConfig(server=SERVER, name="mallory", public_key=honest.public_key),
        Identity.generate().x25519_private,
    )
    wire.clients[ALICE_AT] = client
    client.login(0.0)
    wire.run()
    failures = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert failures and failures[0].code == 401
    assert service.online("mallory", 0.0) is None


def test_introduction_reaches_both_sides_with_one_token_and_a_schedule() -> None:
    service = make_service()
    wire = Wire(service)
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    bob = logged_in(wire, "bob", Identity.generate(), BOB_AT)
    service.online("alice", 0.0).rtt = 0.100  # type: ignore[union-attr]
    service.online("bob", 0.0).rtt = 0.020  # type: ignore[union-attr]
    alice.connect("bob", wire.now)
    wire.run()
    (to_alice,) = [e for e in events(alice) if isinstance(e, Introduced)]
    (to_bob,) = [e for e in events(bob) if isinstance(e, Introduced)]
    a, b = to_alice.introduction, to_bob.introduction
    assert (a.name, a.role, a.public_endpoint) == ("bob", Role.INITIATOR, BOB_AT)
    assert (b.name, b.role, b.public_endpoint) == ("alice", Role.RESPONDER, ALICE_AT)
    assert a.token == b.token and len(a.token) == 16
    # Bob hears 40 ms sooner than Alice (half of 100 - 20): he waits 40 ms longer.
    assert b.punch_delay - a.punch_delay == pytest.approx(0.040, abs=0.002)


def test_unknown_and_offline_peers_get_a_clear_error() -> None:
    service = make_service(registration_lifetime=30.0)
    wire = Wire(service)
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    alice.connect("carol", wire.now)
    wire.run()
    (failed,) = [e for e in events(alice) if isinstance(e, ConnectFailed)]
    assert failed.code == 404 and "unknown or offline" in failed.reason
    # Bob never refreshes: after his registration lapses he is offline (Alice refreshed).
    service.online("alice", 0.0).expires = 100.0  # type: ignore[union-attr]
    wire.now = 31.0
    alice.connect("bob", wire.now)
    del wire.clients[BOB_AT]
    wire.run()
    failures = [e for e in events(alice) if isinstance(e, ConnectFailed)]
    assert failures and failures[0].code == 404


def test_unauthenticated_answers_are_small() -> None:
    service = make_service()
    request = rv_message(
        RvMethod.LOGIN,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((RvAttr.PEER_NAME, "a"), (RvAttr.PUBLIC_KEY, bytes(32))),
    ).encode(fingerprint=True)
    reply = handle(service, request, ALICE_AT, 0.0)
    assert reply is not None and len(reply.data) <= len(request)  # unpadded: told to pad
    padded = rv_message(
        RvMethod.LOGIN,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((RvAttr.PEER_NAME, "a"), (RvAttr.PUBLIC_KEY, bytes(32)), (AttrType.PADDING, bytes(40))),
    ).encode(fingerprint=True)
    reply = handle(service, padded, ALICE_AT, 0.0)
    assert reply is not None and parse_rv(reply.data).get(RvAttr.CHALLENGE) is not None
    assert len(reply.data) <= len(padded)  # a challenge and the server's key, no amplifier


def test_requests_without_session_integrity_are_refused() -> None:
    service = make_service()
    wire = Wire(service)
    logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    forged = rv_message(
        RvMethod.CONNECT,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((AttrType.USERNAME, "alice"), (RvAttr.PEER_NAME, "bob")),
    ).encode(integrity_key=b"guessed key 1234", fingerprint=True)
    reply = handle(service, forged, ("192.0.2.66", 6666), 0.0)
    assert reply is not None
    assert parse_rv(reply.data).get(AttrType.ERROR_CODE).code == 401


def test_state_is_bounded() -> None:
    service = make_service(max_peers=2)
    wire = Wire(service)
    logged_in(wire, "p1", Identity.generate(), ("198.51.100.11", 1))
    logged_in(wire, "p2", Identity.generate(), ("198.51.100.12", 1))
    third = wire.client("p3", Identity.generate(), ("198.51.100.13", 1))
    third.login(wire.now)
    wire.run()
    failures = [e for e in events(third) if isinstance(e, LoginFailed)]
    assert failures and failures[0].code == 503


def test_a_retransmitted_login_gets_the_same_answer() -> None:
    # The answer to the signed login was lost; the client sends the same request again.
    service = make_service()
    wire = Wire(service)
    logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    signed = [data for data, _ in wire.captured if parse_rv(data).get(RvAttr.HANDSHAKE)]
    first = handle(service, signed[0], ALICE_AT, wire.now)
    again = handle(service, signed[0], ALICE_AT, wire.now + 1)
    assert first is not None and again is not None
    assert first.data == again.data
    assert parse_rv(again.data).message_class is MessageClass.SUCCESS


def test_a_retransmitted_connect_does_not_introduce_twice() -> None:
    service = make_service()
    wire = Wire(service)
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    alice.connect("bob", wire.now)
    (request, _) = alice.datagrams_to_send(wire.now)[0], None
    data = request[0]
    first, introduced_first = exchange(service, data, ALICE_AT, wire.now)
    again, introduced_again = exchange(service, data, ALICE_AT, wire.now + 0.5)
    assert first is not None and again is not None and first.data == again.data
    introductions = introduced_first + introduced_again
    assert len(introductions) == 1  # one PEER request to Bob, not two


def test_a_small_order_key_cannot_log_in() -> None:
    # The identity point: it has no X25519 form to prove.
    service = make_service()
    wire = Wire(service)
    client = RendezvousClient(
        RendezvousClientConfig(server=SERVER, name="nobody", public_key=bytes([1]) + bytes(31)),
        Identity.generate().x25519_private,
    )
    wire.clients[ALICE_AT] = client
    client.login(0.0)
    wire.run()
    assert any(isinstance(e, LoginFailed) for e in events(client))
    assert service.online("nobody", 0.0) is None


def test_a_login_with_an_appended_attribute_is_refused() -> None:
    service = make_service()
    wire = Wire(service)
    logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    (signed,) = [d for d, _ in wire.captured if parse_rv(d).get(RvAttr.HANDSHAKE)]
    message = parse_rv(signed)
    # An on-path attacker appends an endpoint of its choosing after the handshake.
    tampered = rv_message(
        message.method,
        message.message_class,
        new_transaction_id(),
        (*message.attributes, (RvAttr.PRIVATE_ENDPOINT, ("192.0.2.66", 53))),
    )
    reply = handle(service, tampered.encode(fingerprint=True), ALICE_AT, wire.now)
    assert reply is not None
    assert parse_rv(reply.data).message_class is MessageClass.ERROR


def test_answers_and_introductions_go_by_the_route_of_the_login() -> None:
    service = make_service()
    wire = Wire(service)
    over_tcp = TcpConnection(SERVER)
    wire.vias[BOB_AT] = over_tcp  # Bob's UDP is blocked: he logged in over TCP
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    bob = logged_in(wire, "bob", Identity.generate(), BOB_AT)
    alice.connect("bob", wire.now)
    wire.run()
    assert any(isinstance(e, Introduced) for e in events(bob))
    to_bob = {t.via for t in wire.sent if t.destination == BOB_AT}
    to_alice = {t.via for t in wire.sent if t.destination == ALICE_AT}
    assert to_bob == {over_tcp} and to_alice == {VIA}


def test_only_canonical_names_log_in_or_are_asked_for() -> None:
    wire = Wire(make_service())
    alice = logged_in(wire, "Alice", Identity.generate(), ALICE_AT)  # (folded: "alice")
    assert wire.service.online("alice", 0.0) is not None
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    # A client that skips the folding asks for a name no one can have.
    alice.connect("Bob", wire.now)
    wire.run()
    (failed,) = [e for e in events(alice) if isinstance(e, ConnectFailed)]
    assert failed.code == 400 and "bad peer name" in failed.reason
    # A login that sends a name in another form (bypassing the config) is told the form.
    login = rv_message(
        RvMethod.LOGIN,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((RvAttr.PEER_NAME, "Carol"), (RvAttr.PUBLIC_KEY, Identity.generate().public_key)),
    )
    answer = handle(wire.service, login.encode(), ("198.51.100.3", 40003), 0.0)
    assert answer is not None
    error = parse_rv(answer.data).get(AttrType.ERROR_CODE)
    assert error.code == 400 and error.reason == "log in as 'carol', the canonical form of 'Carol'"
    # Look-alikes and invisible characters have no canonical form at all.
    for name, why in (
        ("c\u0430rol", "mixes scripts"),
        ("ca\u200brol", "U+200B"),
        ("carol\x1b[2J", "U+001B"),
    ):
        login = rv_message(
            RvMethod.LOGIN,
            MessageClass.REQUEST,
            new_transaction_id(),
            ((RvAttr.PEER_NAME, name), (RvAttr.PUBLIC_KEY, Identity.generate().public_key)),
        )
        answer = handle(wire.service, login.encode(), ("198.51.100.3", 40003), 0.0)
        assert answer is not None
        error = parse_rv(answer.data).get(AttrType.ERROR_CODE)
        assert error.code == 400 and why in error.reason and "\x1b" not in error.reason


def test_new_names_per_source_are_limited_but_returning_peers_are_not() -> None:
    quotas = QuotaConfig(new_names_per_hour=1.0, new_names_burst=3)
    wire = Wire(make_service(quotas=quotas))
    identities = [Identity.generate() for _ in range(5)]
    for index in range(3):  # one address, three new names: the burst
        logged_in(wire, f"peer{index}", identities[index], ALICE_AT)
    client = wire.client("peer3", identities[3], ALICE_AT)
    client.login(wire.now)
    wire.run()
    (failed,) = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert "too many new names from your address" in failed.reason
    # The names it already has still log in (a returning peer creates nothing), and another
    # address (IPv4, or another IPv6 /64) has its own quota.
    wire.now += 1.0  # (a new challenge: the same second would be the same one)
    logged_in(wire, "peer0", identities[0], ALICE_AT)
    logged_in(wire, "peer4", identities[4], BOB_AT)


def test_introductions_to_one_peer_are_limited() -> None:
    quotas = QuotaConfig(introductions_per_second=1.0, introductions_burst=2)
    wire = Wire(make_service(quotas=quotas))
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    for _ in range(3):
        alice.connect("bob", wire.now)
        wire.run()
    found = events(alice)
    assert sum(isinstance(e, Introduced) for e in found) == 2
    (failed,) = [e for e in found if isinstance(e, ConnectFailed)]
    assert failed.code == 503 and "too many introductions to that peer" in failed.reason
    wire.now += 1.0  # (a second later the bucket has one more)
    alice.connect("bob", wire.now)
    wire.run()
    assert any(isinstance(e, Introduced) for e in events(alice))


def test_peers_online_from_one_source_are_limited() -> None:
    wire = Wire(make_service(quotas=QuotaConfig(registrations_per_source=2)))
    identities = [Identity.generate() for _ in range(3)]
    logged_in(wire, "peer0", identities[0], ALICE_AT)
    logged_in(wire, "peer1", identities[1], ("198.51.100.1", 40009))  # (the same address)
    client = wire.client("peer2", identities[2], ("198.51.100.1", 40010))
    client.login(wire.now)
    wire.run()
    (failed,) = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert "too many peers online from your address" in failed.reason
    # A peer already online logs in again (a new mapping) without counting twice, and
    # another address is not limited by this one.
    wire.now += 1.0
    logged_in(wire, "peer0", identities[0], ("198.51.100.1", 40011))
    logged_in(wire, "peer2", identities[2], BOB_AT)
