"""The resumed login's wire pieces (docs/protocol.md, "LOGIN"), shared by server and peer.

A full login's message 2 brings, inside its encrypted payload, a ticket (opaque to the
peer: the server's sealed record of who logged in) and a resumption secret. A later login
may skip the Noise handshake, as TLS 1.3 resumes with a PSK (psk_ke): the peer sends the
ticket, and every key of that login comes from the secret, the challenge (single use: the
server's nonce) and the transaction id (the peer's), so no two logins share a key and a
captured one cannot be replayed. No Diffie-Hellman on either side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from stunproto import StunDecodeError

RESUMPTION_SECRET_SIZE = 32
_LABEL = b"holepunch rendezvous resumed login v1"
_SESSION_KEY_SIZE = 16  # as a full login's (rvproto.login.SESSION_KEY_SIZE)
# Each payload key seals one plaintext (a retransmitted request gets the cached answer), so
# a fixed nonce never repeats under a key.
_NONCE = bytes(12)


@dataclass(frozen=True, slots=True)
class ResumedKeys:
    """One resumed login's keys; both sides derive them and none travels."""

    binder: bytes = field(repr=False)  # the request's MESSAGE-INTEGRITY: proves the secret
    session_key: bytes = field(repr=False)  # the session's MESSAGE-INTEGRITY, as a full login's
    payload_key: bytes = field(repr=False)  # seals the answer's secrets (SEALED)

    @classmethod
    def derive(cls, secret: bytes, challenge: bytes, transaction_id: bytes) -> ResumedKeys:
        """BLAKE2b keyed with the secret (a PRF, as Noise's hash here is BLAKE2s), one call
        cut in three: a third of the cost of three HMACs, and a login is counted in us."""
        out = hashlib.blake2b(_LABEL + challenge + transaction_id, key=secret).digest()
        size = _SESSION_KEY_SIZE
        return cls(binder=out[:size], session_key=out[size : 2 * size], payload_key=out[32:])


def seal(key: bytes, plaintext: bytes) -> bytes:
    """The resumed answer's SEALED: ``plaintext`` under ``key`` (ChaCha20-Poly1305)."""
    return ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, None)


def unseal(key: bytes, sealed: bytes) -> bytes:
    """What :func:`seal` sealed; StunDecodeError if it was not sealed under ``key``."""
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, sealed, None)
    except InvalidTag:
        raise StunDecodeError("the sealed payload does not open") from None
