"""The signed login (docs/protocol.md): stateless challenges bound to the source, the name
and the key, a signature over the request, and each challenge good for one login.

A challenge is ``issued_ms (8 bytes) || HMAC-SHA256(secret, issued_ms, source, name,
key)[:16]``: the server keeps no state until a login succeeds, and then only the used
challenge (until it expires), so that a captured login cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rendezvous.routes import address_text
from rvproto.keys import check_public_key
from rvproto.messages import ErrorCodes, RvAttr, signature_input
from rvproto.names import NAME_RULE, InvalidName, canonical_name, is_canonical
from stunproto import AttrType, StunDecodeError, StunMessage
from stunproto.attributes import Address

log = structlog.get_logger()

MAX_TEXT_BYTES = 32  # NAT-TYPE: a short word; anything longer would amplify


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    name: str
    public_key: bytes
    nat_type: str


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """Why a login fails: the error answer's code and reason, and any extra attributes (a
    fresh challenge)."""

    code: int
    reason: str
    extra: tuple[tuple[int, object], ...] = ()


class LoginChecker:
    def __init__(self, secret: bytes, challenge_lifetime: float) -> None:
        self._secret = secret
        self._lifetime = challenge_lifetime
        self._used: dict[bytes, float] = {}  # challenge -> when it expires

    def check(
        self, message: StunMessage, source: Address, now: float
    ) -> VerifiedLogin | LoginRefusal:
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
            fresh = self._challenge(source, name, key, int(now * 1000))
            return LoginRefusal(
                ErrorCodes.UNAUTHORIZED, "sign this challenge", ((RvAttr.CHALLENGE, fresh),)
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
        if not _only_fingerprint_after_signature(message):
            # Unsigned additions (an on-path attacker appending endpoints or an RTT).
            return LoginRefusal(ErrorCodes.BAD_REQUEST, "attributes after SIGNATURE")
        nat_type = message.get(RvAttr.NAT_TYPE, "unknown")
        if not isinstance(nat_type, str) or len(nat_type.encode()) > MAX_TEXT_BYTES:
            return LoginRefusal(ErrorCodes.BAD_REQUEST, "NAT-TYPE too long")
        try:
            # Small-order and non-canonical keys verify forged signatures in some libraries
            # and have no X25519 form for the peers' handshake: refuse them outright (a
            # key off the curve fails the signature check itself).
            check_public_key(key)
            Ed25519PublicKey.from_public_bytes(key).verify(
                message.get(RvAttr.SIGNATURE) or b"", signature_input(message.raw)
            )
        except (InvalidSignature, ValueError, StunDecodeError):
            return LoginRefusal(ErrorCodes.UNAUTHORIZED, "bad signature")
        self._used[challenge] = issued + self._lifetime
        return VerifiedLogin(name, key, nat_type)

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
        return stamp + hmac.new(self._secret, material, hashlib.sha256).digest()[:16]


def _only_fingerprint_after_signature(message: StunMessage) -> bool:
    kinds = [kind for kind, _ in message.attributes]
    if RvAttr.SIGNATURE not in kinds:
        return True  # the signature check itself refuses it
    after = kinds[kinds.index(RvAttr.SIGNATURE) + 1 :]
    return all(kind == AttrType.FINGERPRINT for kind in after)


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
