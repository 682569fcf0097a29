"""The peer's side of the login handshake (docs/protocol.md, "LOGIN"), sans-I/O.

The first LOGIN asks for a challenge; the server's 401 brings it with the server's static
key, which must be the one pinned (or given with ``--server-key``): a server that presents
another key is refused, loudly. The second LOGIN carries Noise IK message 1 to that key; the
answer's message 2 proves the server holds it, brings the TURN credentials encrypted, and
yields the session key that authenticates everything after (MESSAGE-INTEGRITY both ways),
and a ticket. With a ticket from that same server key, the next login resumes instead
(:class:`LoginResumption`: no Diffie-Hellman on either side); a ticket the server refuses
sends us back to a full handshake at once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from noiseproto import Initiator, NoiseError
from peer.events import TurnCredentials
from rvproto.login import LoginSecrets, prologue_of_unsent, session_key
from rvproto.messages import RvAttr
from rvproto.resumption import RESUMPTION_SECRET_SIZE, ResumedKeys, unseal
from stunproto import AttrType, StunDecodeError, StunMessage
from stunproto.attributes import Address


def server_key_text(key: bytes) -> str:
    """How a server key is written (``rendezvous key`` prints it, ``--server-key`` takes it)."""
    return base64.b64encode(key).decode("ascii")


def parse_server_key(text: str) -> bytes:
    """A server key as written (base64 of 32 bytes); ValueError says what is wrong."""
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError(f"server key {text!r} is not base64") from None
    if len(key) != 32:
        raise ValueError(f"a server key is 32 bytes, not {len(key)}")
    return key


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """A ticket for the next login, only ever shown to ``server_key`` (the key whose
    handshake, or resumption, brought it)."""

    ticket: bytes
    secret: bytes = field(repr=False)
    server_key: bytes


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    """A login the server's handshake (or its proof of a ticket's secret) proved."""

    session_key: bytes
    public_endpoint: Address
    lifetime: float
    server_key: bytes
    turn: TurnCredentials | None
    ticket: SessionTicket | None
    resumed: bool = False


class LoginHandshake:
    """One login attempt's handshake: built from the challenge, finished by the answer."""

    def __init__(self, static: X25519PrivateKey, server_key: bytes) -> None:
        self.server_key = server_key
        self._static = static
        self._initiator: Initiator | None = None

    def request(self, unsent: StunMessage) -> bytes:
        """``unsent`` (the second LOGIN, every attribute in place) with HANDSHAKE and
        FINGERPRINT appended, encoded."""
        self._initiator = Initiator(self._static, self.server_key, prologue_of_unsent(unsent))
        message1 = self._initiator.write_message1()
        return _appended(unsent, (RvAttr.HANDSHAKE, message1)).encode(fingerprint=True)

    def finish(self, response: StunMessage) -> LoginAnswer | str:
        """The proven login, or why the answer proves nothing."""
        message2 = response.get(RvAttr.HANDSHAKE)
        if self._initiator is None or not isinstance(message2, bytes):
            return "the answer lacks the server's handshake"
        try:
            payload, keys = self._initiator.read_message2(message2)
            secrets = LoginSecrets.parse(payload)
        except (NoiseError, StunDecodeError):
            return "the server failed its handshake (not the key it presented)"
        return _answer(response, session_key(keys.send), secrets, self.server_key, False)


class LoginResumption:
    """One login attempt with a ticket: the same interface as :class:`LoginHandshake`."""

    def __init__(self, ticket: SessionTicket, challenge: bytes) -> None:
        self.server_key = ticket.server_key
        self.challenge = challenge  # (for the full handshake, should the ticket be refused)
        self._ticket = ticket
        self._keys: ResumedKeys | None = None

    def request(self, unsent: StunMessage) -> bytes:
        """``unsent`` with TICKET, then MESSAGE-INTEGRITY under a key of the ticket's secret
        and this challenge (which proves we hold the secret) and FINGERPRINT, encoded."""
        self._keys = ResumedKeys.derive(self._ticket.secret, self.challenge, unsent.transaction_id)
        with_ticket = _appended(unsent, (RvAttr.TICKET, self._ticket.ticket))
        return with_ticket.encode(integrity_key=self._keys.binder, fingerprint=True)

    def finish(self, response: StunMessage) -> LoginAnswer | str:
        sealed = response.get(RvAttr.SEALED)
        if self._keys is None or not isinstance(sealed, bytes):
            return "the answer lacks the sealed login secrets"
        try:
            secrets = LoginSecrets.parse(unseal(self._keys.payload_key, sealed))
        except StunDecodeError:
            return "the server failed to prove the ticket's secret"
        return _answer(response, self._keys.session_key, secrets, self.server_key, True)


def _appended(unsent: StunMessage, attribute: tuple[int, object]) -> StunMessage:
    return StunMessage(
        unsent.method,
        unsent.message_class,
        unsent.transaction_id,
        (*unsent.attributes, attribute),
        codecs=unsent.codecs,
    )


def _answer(
    response: StunMessage, key: bytes, secrets: LoginSecrets, server_key: bytes, resumed: bool
) -> LoginAnswer | str:
    mapped = response.get(AttrType.XOR_MAPPED_ADDRESS)
    if mapped is None:
        return "the answer lacks the mapped address"
    if not response.check_integrity(key):
        return "the server's answer was altered on the way"
    turn = None
    server = response.get(RvAttr.TURN_SERVER)
    if server is not None and secrets.turn_username:
        turn = TurnCredentials(server, secrets.turn_username, secrets.turn_password)
    ticket = None
    if secrets.ticket and len(secrets.resumption_secret) == RESUMPTION_SECRET_SIZE:
        ticket = SessionTicket(secrets.ticket, secrets.resumption_secret, server_key)
    lifetime = max(float(response.get(AttrType.LIFETIME, 60)), 10.0)
    return LoginAnswer(key, mapped, lifetime, server_key, turn, ticket, resumed)


def key_mismatch(server: Address, presented: bytes, expected: bytes) -> str:
    return (
        f"the server at {server[0]}:{server[1]} presents key {server_key_text(presented)},"
        f" not {server_key_text(expected)} as pinned or given: refusing to log in (someone"
        " may be in the middle; if the server's key was replaced on purpose, run `peer"
        f" forget @{server[0]}:{server[1]}`)"
    )
