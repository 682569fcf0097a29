"""The login as a Noise handshake to the server's key: no secret in clear, introductions
nobody but the server can make, and a server with another key refused."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from peer.events import Introduced, LoggedIn, LoginFailed
from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from rvproto.messages import Role, RvAttr, RvMethod, parse_rv, rv_message
from stunproto import AttrType, MessageClass
from stunproto.attributes import Address
from stunproto.message import HEADER_SIZE, new_transaction_id
from tests.rendezvous.test_introductions import (
    ALICE_AT,
    BOB_AT,
    SERVER,
    Wire,
    events,
    logged_in,
    make_service,
)

TURN = {"turn_secret": b"relay secret"}


def _all_windows(datagrams: list[bytes], size: int) -> set[bytes]:
    return {data[i : i + size] for data in datagrams for i in range(len(data) - size + 1)}


def test_no_secret_travels_in_clear() -> None:
    service = make_service(**TURN)
    wire = Wire(service)
    client = wire.client("alice", Identity.generate(), ALICE_AT)
    client.login(0.0)
    wire.run()
    logins = [e for e in events(client) if isinstance(e, LoggedIn)]
    # Then a resumed login (the ticket the first brought): its secrets stay hidden too.
    wire.now = 1.0
    client.login(wire.now)
    wire.run()
    logins += [e for e in events(client) if isinstance(e, LoggedIn)]
    assert len(logins) == 2 and client.resumed
    registration = service.online("alice", wire.now)
    assert registration is not None and client.session_key == registration.session_key
    seen = b"".join([data for data, _ in wire.captured] + [t.data for t in wire.sent])
    assert registration.session_key not in seen
    assert client.ticket is not None and client.ticket.secret not in seen
    assert client.ticket.ticket not in seen  # (the next ticket: not shown yet)
    # The TURN credentials reached the peer, inside the handshake or sealed only.
    for logged in logins:
        turn = logged.turn
        assert turn is not None and turn.password and turn.password.encode() not in seen


@pytest.mark.parametrize("resumed", [False, True])
def test_an_eavesdropper_cannot_forge_an_introduction(resumed: bool) -> None:
    # The assessment's attack: whoever saw a login sent the peer an introduction under a
    # name it chose, with its own key, authenticated with the SESSION-KEY it had read. Now
    # no 16 bytes of anything on the wire authenticate a message to the peer, after a
    # resumed login (its ticket in clear) as after a full one.
    service = make_service(**TURN)
    wire = Wire(service)
    alice = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    if resumed:
        wire.now = 1.0
        alice.login(wire.now)
        wire.run()
        assert alice.resumed and any(isinstance(e, LoggedIn) for e in events(alice))
    alice.connect("bob", wire.now)
    wire.run()
    genuine = [e for e in events(alice) if isinstance(e, Introduced)]
    assert len(genuine) == 1  # (the real introduction went through)
    seen = [data for data, _ in wire.captured] + [t.data for t in wire.sent]
    attacker = Identity.generate()
    forged_intro = (
        (AttrType.USERNAME, "alice"),
        (RvAttr.PEER_NAME, "bank"),
        (RvAttr.PUBLIC_KEY, attacker.public_key),
        (RvAttr.PUBLIC_ENDPOINT, ("192.0.2.66", 4444)),
        (RvAttr.ROLE, int(Role.RESPONDER)),
        (RvAttr.CONNECT_TOKEN, bytes(16)),
        (RvAttr.PUNCH_DELAY, 0),
    )
    candidates = _all_windows(seen, 16)
    assert len(candidates) > 1000
    for key in candidates:
        forged = rv_message(RvMethod.PEER, MessageClass.REQUEST, new_transaction_id(), forged_intro)
        alice.receive_datagram(forged.encode(integrity_key=key, fingerprint=True), SERVER, wire.now)
    assert not [e for e in events(alice) if isinstance(e, Introduced)]
    assert alice.datagrams_to_send(wire.now) == []  # not even acknowledged


def test_a_server_with_another_key_is_refused() -> None:
    # A server (or whoever answers in its place) that does not present the pinned key.
    service = make_service()
    wire = Wire(service)
    identity = Identity.generate()
    config = RendezvousClientConfig(
        server=SERVER,
        name="alice",
        public_key=identity.public_key,
        server_key=Identity.generate().x25519_public,
    )
    client = RendezvousClient(config, identity.x25519_private)
    wire.clients[ALICE_AT] = client
    client.login(0.0)
    wire.run()
    failures = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert failures and "presents key" in failures[0].reason and "peer forget" in failures[0].reason
    assert service.online("alice", 0.0) is None
    assert not any(RvAttr.HANDSHAKE in parse_rv(data) for data, _ in wire.captured)


def test_the_key_a_first_login_proves_is_what_the_next_logins_expect() -> None:
    service = make_service()
    wire = Wire(service)
    identity = Identity.generate()
    client = wire.client("alice", identity, ALICE_AT)
    client.login(0.0)
    wire.run()
    (logged,) = [e for e in events(client) if isinstance(e, LoggedIn)]
    assert logged.server_key == client.server_key == service.introductions.server_key
    # Given up front (--server-key), the same key logs in.
    config = RendezvousClientConfig(
        server=SERVER, name="alice", public_key=identity.public_key, server_key=logged.server_key
    )
    again = RendezvousClient(config, identity.x25519_private)
    wire.clients[ALICE_AT] = again
    wire.now = 1.0  # (a challenge of another millisecond: one challenge, one login)
    again.login(wire.now)
    wire.run()
    assert any(isinstance(e, LoggedIn) for e in events(again))


class _TamperingWire(Wire):
    def __init__(self, *args: object, tamper: Callable[[bytes], bytes]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.tamper = tamper

    def deliver(self, data: bytes, destination: Address) -> None:
        super().deliver(self.tamper(data), destination)


def _change_mapped_port(data: bytes) -> bytes:
    """An on-path attacker's edit of a login answer: another XOR-MAPPED-ADDRESS port, with
    a FINGERPRINT that still matches."""
    message = parse_rv(data)
    if message.message_class is not MessageClass.SUCCESS or RvAttr.HANDSHAKE not in message:
        return data
    raw = bytearray(data)
    pos = HEADER_SIZE
    while pos < len(raw):
        kind, length = struct.unpack_from("!HH", raw, pos)
        if kind == AttrType.XOR_MAPPED_ADDRESS:
            raw[pos + 6] ^= 0x01
        if kind == AttrType.FINGERPRINT:
            crc = (zlib.crc32(bytes(raw[:pos])) ^ 0x5354554E) & 0xFFFFFFFF
            struct.pack_into("!I", raw, pos + 4, crc)
        pos += 4 + length + (-length & 3)
    return bytes(raw)


def test_an_altered_login_answer_is_refused() -> None:
    wire = _TamperingWire(make_service(), tamper=_change_mapped_port)
    client = wire.client("alice", Identity.generate(), ALICE_AT)
    client.login(0.0)
    wire.run()
    failures = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert failures and "altered" in failures[0].reason
    assert client.session_key is None
