"""The peer's side of the login handshake (docs/protocol.md, "LOGIN"), sans-I/O.

The first LOGIN asks for a challenge; the server's 401 brings it with the server's static
key, which must be the one pinned (or given with ``--server-key``): a server that presents
another key is refused, loudly. The second LOGIN carries Noise IK message 1 to that key; the
answer's message 2 proves the server holds it, brings the TURN credentials encrypted, and
yields the session key that authenticates everything after (MESSAGE-INTEGRITY both ways).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from noiseproto import Initiator, NoiseError
from peer.events import TurnCredentials
from rvproto.login import LoginSecrets, prologue_of_unsent, session_key
from rvproto.messages import RvAttr
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
class LoginAnswer:
    """A login the server's handshake proved."""

    session_key: bytes
    public_endpoint: Address
    lifetime: float
    server_key: bytes
    turn: TurnCredentials | None


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
        with_handshake = StunMessage(
            unsent.method,
            unsent.message_class,
            unsent.transaction_id,
            (*unsent.attributes, (RvAttr.HANDSHAKE, message1)),
            codecs=unsent.codecs,
        )
        return with_handshake.encode(fingerprint=True)

    def finish(self, response: StunMessage) -> LoginAnswer | str:
        """The proven login, or why the answer proves nothing."""
        message2 = response.get(RvAttr.HANDSHAKE)
        mapped = response.get(AttrType.XOR_MAPPED_ADDRESS)
        if self._initiator is None or not isinstance(message2, bytes) or mapped is None:
            return "the answer lacks the server's handshake"
        try:
            payload, keys = self._initiator.read_message2(message2)
            secrets = LoginSecrets.parse(payload)
        except (NoiseError, StunDecodeError):
            return "the server failed its handshake (not the key it presented)"
        key = session_key(keys.send)
        if not response.check_integrity(key):
            return "the server's answer was altered on the way"
        turn = None
        server = response.get(RvAttr.TURN_SERVER)
        if server is not None and secrets.turn_username:
            turn = TurnCredentials(server, secrets.turn_username, secrets.turn_password)
        lifetime = max(float(response.get(AttrType.LIFETIME, 60)), 10.0)
        return LoginAnswer(key, mapped, lifetime, self.server_key, turn)


def key_mismatch(server: Address, presented: bytes, expected: bytes) -> str:
    return (
        f"the server at {server[0]}:{server[1]} presents key {server_key_text(presented)},"
        f" not {server_key_text(expected)} as pinned or given: refusing to log in (someone"
        " may be in the middle; if the server's key was replaced on purpose, run `peer"
        f" forget @{server[0]}:{server[1]}`)"
    )
