"""The login (docs/protocol.md): stateless challenges bound to the source, the name and the
key, then a Noise IK handshake to the server's static key, or a ticket a handshake issued
(rendezvous.tickets: no Diffie-Hellman), each challenge good for one login.

A challenge is ``issued_ms (8 bytes) || BLAKE2s-128(key=secret; issued_ms, source, name,
key)``: the server keeps no state until a login succeeds, and then only the used
challenge (until it expires), so that a captured login cannot be replayed. The challenge is
also the handshake's cookie (as WireGuard's MAC2 under load, but always): the Diffie-Hellman
work is only done for a source that has shown it receives at its address.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from noiseproto import NoiseError, Responder
from rendezvous.routes import address_text
from rendezvous.tickets import Tickets
from rvproto.keys import PublicKeyError, check_public_key, is_x25519_form
from rvproto.login import login_prologue
from rvproto.messages import ErrorCodes, RvAttr
from rvproto.names import NAME_RULE, InvalidName, canonical_name, is_canonical
from rvproto.resumption import ResumedKeys
from stunproto import StunDecodeError, StunMessage
from stunproto.attributes import Address

log = structlog.get_logger()

MAX_TEXT_BYTES = 32  # NAT-TYPE: a short word; anything longer would amplify
# The challenge answer (with the server's key) is about this long: a first LOGIN must be at
# least as long (the client pads it), so that a spoofed one amplifies nothing.
MIN_CHALLENGE_REQUEST = 112


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    """A login whose handshake message 1 checked out: ``responder`` writes message 2."""

    name: str
    public_key: bytes
    nat_type: str
    challenge: bytes
    responder: Responder


@dataclass(frozen=True, slots=True)
class ResumedLogin:
    """A login whose ticket and integrity checked out: ``keys`` seal and sign the answer,
    whose fresh ticket keeps the old one's expiry (a full handshake once a lifetime)."""

    name: str
    public_key: bytes
    nat_type: str
    challenge: bytes
    keys: ResumedKeys
    expires: int


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """Why a login fails: the error answer's code and reason, and any extra attributes (a
    fresh challenge)."""

    code: int
    reason: str
    extra: tuple[tuple[int, object], ...] = ()


class LoginChecker:
    def __init__(
        self, secret: bytes, challenge_lifetime: float, static: X25519PrivateKey, tickets: Tickets
    ) -> None:
        self._secret = secret
        self._static = static
        self._tickets = tickets
        self.server_key = static.public_key().public_bytes_raw()
        self._lifetime = challenge_lifetime
        self._used: dict[bytes, float] = {}  # challenge -> when it expires

    def check(
        self, message: StunMessage, source: Address, now: float
    ) -> VerifiedLogin | ResumedLogin | LoginRefusal:
        """A LOGIN request from ``source``: who logs in, or why not. A verified login uses
        up its challenge."""
        name = message.get(RvAttr.PEER_NAME)
        key = message.get(RvAttr.PUBLIC_KEY)
        if not isinstance(name, str) or not is_canonical(name):
            return LoginRefusal(ErrorCodes.BAD_REQUEST, _name_refusal(name))
        if not isinstance(key, bytes):
            return LoginRefusal(ErrorCodes.BAD_REQUEST, "a public key is required")
        challenge = message.get(RvAttr.CHALLENGE)
        if challenge is None:
            if len(message.raw) < MIN_CHALLENGE_REQUEST:
                reason = f"pad LOGIN to {MIN_CHALLENGE_REQUEST} B"
                return LoginRefusal(ErrorCodes.BAD_REQUEST, reason)
            fresh = self._challenge(source, name, key, int(now * 1000))
            return LoginRefusal(
                ErrorCodes.UNAUTHORIZED,
                "challenge",
                ((RvAttr.CHALLENGE, fresh), (RvAttr.SERVER_KEY, self.server_key)),
            )
        issued_ms = int.from_bytes(challenge[:8], "big")
        issued = issued_ms / 1000
        if not hmac.compare_digest(challenge, self._challenge(source, name, key, issued_ms)):
            return LoginRefusal(ErrorCodes.UNAUTHORIZED, "challenge not issued to you")
        if not issued <= now < issued + self._lifetime:
            return LoginRefusal(ErrorCodes.STALE, "challenge expired")
        if challenge in self._used:
            log.warning("login_replay", name=name, source=address_text(source))
            return LoginRefusal(ErrorCodes.STALE, "challenge already used")
        nat_type = message.get(RvAttr.NAT_TYPE, "unknown")
        if not isinstance(nat_type, str) or len(nat_type.encode()) > MAX_TEXT_BYTES:
            return LoginRefusal(ErrorCodes.BAD_REQUEST, "NAT-TYPE too long")
        ticket = message.get(RvAttr.TICKET)
        login = (
            self._handshake(message, name, key, nat_type, challenge)
            if ticket is None
            else self._resume(message, ticket, name, key, nat_type, challenge, now)
        )
        if not isinstance(login, LoginRefusal):
            self._used[challenge] = issued + self._lifetime
        return login

    def _handshake(
        self, message: StunMessage, name: str, key: bytes, nat_type: str, challenge: bytes
    ) -> VerifiedLogin | LoginRefusal:
        try:
            # Small-order and non-canonical keys have no safe X25519 form for the peers'
            # handshake: refuse them outright.
            check_public_key(key)
            # The prologue holds every attribute before HANDSHAKE, so an on-path attacker
            # can neither change them nor append any (it refuses all but FINGERPRINT).
            responder = Responder(self._static, login_prologue(message.raw))
            static, _ = responder.read_message1(message.get(RvAttr.HANDSHAKE) or b"")
        except (PublicKeyError, NoiseError, StunDecodeError):
            return LoginRefusal(ErrorCodes.UNAUTHORIZED, "handshake failed")
        if not is_x25519_form(key, static):
            return LoginRefusal(ErrorCodes.UNAUTHORIZED, "the handshake's key is not PUBLIC-KEY")
        return VerifiedLogin(name, key, nat_type, challenge, responder)

    def _resume(
        self,
        message: StunMessage,
        blob: bytes,
        name: str,
        key: bytes,
        nat_type: str,
        challenge: bytes,
        now: float,
    ) -> ResumedLogin | LoginRefusal:
        # Every refusal here is TICKET_REFUSED, which sends the peer to a full handshake at
        # once (the challenge unspent): a forged one costs it a handshake, nothing more.
        ticket = self._tickets.open(blob, now)
        if isinstance(ticket, str):
            return LoginRefusal(ErrorCodes.TICKET_REFUSED, ticket)
        if ticket.name != name or ticket.public_key != key:
            return LoginRefusal(ErrorCodes.TICKET_REFUSED, "the ticket is for another login")
        # The key (the name's, checked at the handshake that issued the ticket) needs no
        # check again; the integrity proves the secret, bound to this challenge.
        keys = ResumedKeys.derive(ticket.secret, challenge, message.transaction_id)
        if not message.check_integrity(keys.binder):
            return LoginRefusal(ErrorCodes.TICKET_REFUSED, "the ticket's secret is not proven")
        return ResumedLogin(name, key, nat_type, challenge, keys, ticket.expires)

    def unspend(self, challenge: bytes) -> None:
        """The login could not be completed by no fault of the client (the database failed):
        its challenge may be used again, for its retransmission or a retry."""
        self._used.pop(challenge, None)

    def expire(self, now: float) -> None:
        for challenge in [c for c, until in self._used.items() if until <= now]:
            del self._used[challenge]

    def __len__(self) -> int:
        return len(self._used)

    def _challenge(self, source: Address, name: str, key: bytes, issued_ms: int) -> bytes:
        stamp = issued_ms.to_bytes(8, "big")
        material = stamp + f"{source[0]}|{source[1]}|{name}|".encode() + key
        # Keyed BLAKE2s is a MAC in one call (a third of an HMAC's time); only this server
        # ever checks it, so its form is nobody else's business.
        return stamp + hashlib.blake2s(material, key=self._secret, digest_size=16).digest()


def _name_refusal(name: object) -> str:
    """Why a name cannot log in: no canonical form, or not sent in it (the client folds
    the name before signing it: rvproto.names)."""
    if not isinstance(name, str):
        return f"no peer name; {NAME_RULE}"
    try:
        canonical = canonical_name(name)
    except InvalidName as exc:
        return str(exc)
    return f"log in as {canonical!r}, the canonical form of {name!r}"
