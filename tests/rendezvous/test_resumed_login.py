"""A returning peer's login resumes with the ticket its last login brought (rendezvous.tickets,
rvproto.resumption): no Diffie-Hellman on either side, no replay, no ticket from another
server key or tampered with, and an expired one costs a round trip, then a full handshake."""

from __future__ import annotations

import dataclasses

import pytest

import noiseproto.handshake
from peer.events import LoggedIn, LoginFailed
from peer.identity import Identity
from peer.rendezvous_client import LoginState, RendezvousClient, RendezvousClientConfig
from peer.rendezvous_login import LoginResumption, SessionTicket
from rendezvous.errors import ConfigError
from rendezvous.registry import NameRegistry
from rvproto.messages import ErrorCodes, RvAttr, RvMethod, parse_rv, rv_message
from stunproto import AttrType, MessageClass, StunMessage
from stunproto.attributes import Address
from stunproto.message import new_transaction_id
from tests.rendezvous.test_introductions import (
    ALICE_AT,
    BOB_AT,
    SERVER,
    Wire,
    events,
    handle,
    logged_in,
    make_service,
)

KEY = bytes(range(32))


def _logins(wire: Wire) -> list[StunMessage]:
    return [m for data, _ in wire.captured if (m := parse_rv(data)).method == RvMethod.LOGIN]


def _relogin(wire: Wire, client: RendezvousClient, after: float = 1.0) -> list[object]:
    """The client logs in again ``after`` seconds on (a new challenge); its events."""
    wire.captured.clear()
    wire.sent.clear()
    wire.now += after
    client.login(wire.now)
    wire.run()
    return events(client)


def _answer_codes(wire: Wire) -> list[int]:
    codes = []
    for transmit in wire.sent:
        error = parse_rv(transmit.data).get(AttrType.ERROR_CODE)
        if error is not None:
            codes.append(error.code)
    return codes


def test_a_returning_peer_resumes_without_any_diffie_hellman(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = make_service(server_key=KEY)
    wire = Wire(service)
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    logged_in(wire, "bob", Identity.generate(), BOB_AT)
    assert client.ticket is not None and not client.resumed
    exchanges: list[bytes] = []
    real_dh = noiseproto.handshake._dh

    def counting_dh(private: object, public: bytes) -> bytes:
        exchanges.append(public)
        return real_dh(private, public)  # type: ignore[arg-type]

    monkeypatch.setattr(noiseproto.handshake, "_dh", counting_dh)
    first_ticket = client.ticket
    found = _relogin(wire, client)
    assert any(isinstance(e, LoggedIn) for e in found)
    assert client.resumed and client.state is LoginState.LOGGED_IN
    assert exchanges == []  # neither side did an X25519 operation
    first, resumed = _logins(wire)
    assert RvAttr.TICKET in resumed and RvAttr.HANDSHAKE not in resumed
    assert RvAttr.TICKET not in first  # (the challenge request shows nothing)
    registration = service.online("alice", wire.now)
    assert registration is not None and registration.session_key == client.session_key
    # A fresh ticket each time, and the session works: a CONNECT is authenticated.
    assert client.ticket is not None and client.ticket.ticket != first_ticket.ticket
    client.connect("bob", wire.now)
    wire.run()
    assert [type(e).__name__ for e in events(client)] == ["Introduced"]
    # A full login, by contrast, does four on each side (the count is real).
    logged_in(wire, "carol", Identity.generate(), ("198.51.100.3", 40003))
    assert len(exchanges) == 8


def test_a_replayed_resumed_login_is_refused() -> None:
    service = make_service()
    wire = Wire(service)
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    _relogin(wire, client)
    assert client.resumed
    (replayed,) = [data for data, _ in wire.captured if RvAttr.TICKET in parse_rv(data)]
    # From elsewhere (an attacker moving alice's registration): never issued there.
    answer = handle(service, replayed, ("192.0.2.66", 4444), wire.now)
    assert answer is not None
    error = parse_rv(answer.data).get(AttrType.ERROR_CODE)
    assert error.code == ErrorCodes.UNAUTHORIZED and "not issued to you" in error.reason
    # From alice's address once its answer is no longer cached: its challenge is spent.
    answer = handle(service, replayed, ALICE_AT, wire.now + 41.0)
    assert answer is not None
    assert parse_rv(answer.data).get(AttrType.ERROR_CODE).code == ErrorCodes.STALE
    registration = service.online("alice", wire.now)
    assert registration is not None and registration.endpoint == ALICE_AT


def test_a_stolen_ticket_without_its_secret_logs_nobody_in() -> None:
    # The ticket travels in clear in a resumed login; the secret never does.
    service = make_service()
    wire = Wire(service)
    identity = Identity.generate()
    victim = logged_in(wire, "alice", identity, ALICE_AT)
    assert victim.ticket is not None
    config = RendezvousClientConfig(server=SERVER, name="alice", public_key=identity.public_key)
    thief = RendezvousClient(config, Identity.generate().x25519_private)  # not alice's key
    wire.clients[("192.0.2.66", 4444)] = thief
    thief.ticket = dataclasses.replace(victim.ticket, secret=bytes(32))
    thief.server_key = victim.ticket.server_key
    thief.login(wire.now + 1.0)
    wire.now += 1.0
    wire.run()
    assert ErrorCodes.TICKET_REFUSED in _answer_codes(wire)
    assert thief.state is not LoginState.LOGGED_IN  # (the fallback handshake needs alice's key)
    registration = service.online("alice", wire.now)
    assert registration is not None and registration.endpoint == ALICE_AT


def _login_request(identity: Identity, *attributes: tuple[int, object]) -> StunMessage:
    alice = ((RvAttr.PEER_NAME, "alice"), (RvAttr.PUBLIC_KEY, identity.public_key))
    return rv_message(
        RvMethod.LOGIN, MessageClass.REQUEST, new_transaction_id(), (*alice, *attributes)
    )


def test_a_ticket_from_another_server_key_is_refused() -> None:
    identity = Identity.generate()
    wire = Wire(make_service(server_key=KEY))
    client = logged_in(wire, "alice", identity, ALICE_AT)
    ticket = client.ticket
    assert ticket is not None
    # Another server (another key) is shown the ticket anyway: it cannot open it.
    other = make_service(server_key=bytes(range(1, 33)))
    first = _login_request(identity, (AttrType.PADDING, bytes(48)))
    answer = handle(other, first.encode(fingerprint=True), ALICE_AT, wire.now)
    assert answer is not None
    challenge = parse_rv(answer.data).get(RvAttr.CHALLENGE)
    unsent = _login_request(identity, (RvAttr.CHALLENGE, challenge))
    resumed = LoginResumption(ticket, challenge).request(unsent)
    answer = handle(other, resumed, ALICE_AT, wire.now)
    assert answer is not None
    error = parse_rv(answer.data).get(AttrType.ERROR_CODE)
    assert error.code == ErrorCodes.TICKET_REFUSED and "this server's key" in error.reason
    assert other.introductions.online("alice", wire.now) is None


def test_the_peer_shows_a_ticket_only_to_the_key_it_came_from() -> None:
    wire = Wire(make_service(server_key=KEY))
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    assert client.ticket is not None
    client.ticket = SessionTicket(client.ticket.ticket, client.ticket.secret, bytes(32))
    _relogin(wire, client)
    assert not client.resumed and client.state is LoginState.LOGGED_IN
    assert not any(RvAttr.TICKET in m for m in _logins(wire))


def test_a_tampered_ticket_is_refused_and_the_peer_falls_back_at_once() -> None:
    wire = Wire(make_service())
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    assert client.ticket is not None
    blob = bytearray(client.ticket.ticket)
    blob[20] ^= 0x01
    client.ticket = dataclasses.replace(client.ticket, ticket=bytes(blob))
    found = _relogin(wire, client)
    assert any(isinstance(e, LoggedIn) for e in found)
    assert not client.resumed and client.state is LoginState.LOGGED_IN
    assert _answer_codes(wire) == [ErrorCodes.UNAUTHORIZED, ErrorCodes.TICKET_REFUSED]
    # One round trip lost: the handshake reused the challenge the refusal left unspent.
    _, refused, full = _logins(wire)
    assert refused.get(RvAttr.CHALLENGE) == full.get(RvAttr.CHALLENGE)
    assert RvAttr.HANDSHAKE in full and client.ticket is not None  # and a good ticket again


def test_an_expired_ticket_means_a_full_handshake_then_resumption_again() -> None:
    wire = Wire(make_service(ticket_lifetime=100.0))
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    _relogin(wire, client, after=60.0)
    assert client.resumed
    # The ticket a resumption brings keeps the first one's expiry: a full handshake at
    # least once a lifetime.
    found = _relogin(wire, client, after=60.0)
    assert any(isinstance(e, LoggedIn) for e in found) and not client.resumed
    assert ErrorCodes.TICKET_REFUSED in _answer_codes(wire)
    assert len(_logins(wire)) == 3  # challenge, refused ticket, handshake
    _relogin(wire, client, after=60.0)
    assert client.resumed


def test_tickets_survive_a_restart_with_the_same_key_and_die_with_a_new_epoch() -> None:
    registry = NameRegistry()
    wire = Wire(make_service(registry, server_key=KEY))
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    wire.service = make_service(registry, server_key=KEY)  # restarted: same key file
    _relogin(wire, client)
    assert client.resumed
    wire.service = make_service(registry, server_key=KEY, ticket_epoch=1)  # rotated
    found = _relogin(wire, client)
    assert any(isinstance(e, LoggedIn) for e in found) and not client.resumed
    assert ErrorCodes.TICKET_REFUSED in _answer_codes(wire)


def test_the_ticket_settings_are_checked() -> None:
    for wrong in ({"ticket_epoch": 256}, {"ticket_lifetime": 0.0}):
        with pytest.raises(ConfigError, match="ticket"):
            make_service(**wrong)


def _forge_resumed_answer(data: bytes) -> bytes:
    """An on-path attacker's resumed answer: its own mapped address, the real SEALED, and
    an integrity under a key it chose (it knows none of the login's)."""
    message = parse_rv(data)
    if RvAttr.SEALED not in message:
        return data
    forged = message.reply(
        MessageClass.SUCCESS,
        (AttrType.XOR_MAPPED_ADDRESS, ("192.0.2.66", 4444)),
        (AttrType.LIFETIME, 60),
        (RvAttr.SEALED, message.get(RvAttr.SEALED)),
    )
    return forged.encode(integrity_key=bytes(16), fingerprint=True)


class _ForgingWire(Wire):
    forging = False

    def deliver(self, data: bytes, destination: Address) -> None:
        super().deliver(_forge_resumed_answer(data) if self.forging else data, destination)


def test_a_resumed_answer_altered_on_the_way_is_refused() -> None:
    wire = _ForgingWire(make_service())
    client = logged_in(wire, "alice", Identity.generate(), ALICE_AT)
    before = client.session_key
    wire.forging = True
    found = _relogin(wire, client)
    failures = [e for e in found if isinstance(e, LoginFailed)]
    assert not any(isinstance(e, LoggedIn) for e in found)
    assert client.state is LoginState.OFFLINE and client.session_key == before
    assert not failures  # (once online, a failed login is an Offline and a retry)
