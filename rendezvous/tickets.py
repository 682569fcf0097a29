"""Login tickets (docs/protocol.md, "LOGIN"): what lets a returning peer log in without a
Diffie-Hellman, as a TLS 1.3 session ticket does.

A ticket is ``epoch (1) || nonce (12) || ChaCha20-Poly1305(ticket key, nonce, record,
aad=epoch)``, the record being the expiry (Unix seconds, 8), the peer's public key (32),
the resumption secret (32) and the name. The server keeps nothing: the ticket key is
derived from its static private key and the epoch, so tickets survive a restart with the
same key file, die with another key, and a new epoch (``ticket_epoch``) voids them all.
A resumed login's ticket carries its first expiry on: a full handshake at least once per
lifetime, whatever the resumptions in between.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from rvproto.keys import PUBLIC_KEY_SIZE
from rvproto.resumption import RESUMPTION_SECRET_SIZE

_KEY_LABEL = b"holepunch rendezvous ticket key"
_NONCE_SIZE = 12
_RECORD = struct.Struct(f"!Q{PUBLIC_KEY_SIZE}s{RESUMPTION_SECRET_SIZE}s")


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a ticket vouches for: a login under ``name`` with ``public_key``."""

    name: str
    public_key: bytes
    secret: bytes = field(repr=False)  # the resumption secret the peer got with it
    expires: int  # Unix seconds


def ticket_key(static_private: bytes, epoch: int) -> bytes:
    return hmac.digest(static_private, _KEY_LABEL + bytes([epoch]), "sha256")


class Tickets:
    """Issues and opens tickets; sans-I/O (``now`` is the core's clock, ``wall_offset``
    turns it into Unix time, which a ticket must keep across restarts)."""

    def __init__(
        self,
        static_private: bytes,
        *,
        epoch: int,
        lifetime: float,
        wall_offset: float,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.epoch = epoch
        self._epoch_byte = bytes([epoch])
        self._aead = ChaCha20Poly1305(ticket_key(static_private, epoch))
        self._lifetime = lifetime
        self._wall_offset = wall_offset
        self._random = random_bytes

    def issue(
        self, name: str, public_key: bytes, now: float, expires: int | None = None
    ) -> tuple[bytes, bytes]:
        """A ticket (a fresh secret in it) and its resumption secret, for the peer; good
        until ``expires`` (Unix seconds), by default a lifetime from now."""
        if expires is None:
            expires = int(now + self._wall_offset + self._lifetime)
        fresh = self._random(RESUMPTION_SECRET_SIZE + _NONCE_SIZE)  # (one call: cheaper)
        secret, nonce = fresh[:RESUMPTION_SECRET_SIZE], fresh[RESUMPTION_SECRET_SIZE:]
        record = _RECORD.pack(expires, public_key, secret) + name.encode()
        sealed = self._aead.encrypt(nonce, record, self._epoch_byte)
        return self._epoch_byte + nonce + sealed, secret

    def open(self, blob: bytes, now: float) -> Ticket | str:
        """The ticket in ``blob``, or why it is no good (for the refusal's reason)."""
        if len(blob) < 1 + _NONCE_SIZE + _RECORD.size + 16:
            return "ticket malformed"
        if blob[0] != self.epoch:
            return "ticket of another key epoch"
        try:
            record = self._aead.decrypt(
                blob[1 : 1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE :], blob[:1]
            )
        except InvalidTag:
            return "ticket not issued by this server's key"
        expires, public_key, secret = _RECORD.unpack_from(record)
        if now + self._wall_offset >= expires:
            return "ticket expired"
        try:
            name = record[_RECORD.size :].decode()
        except UnicodeDecodeError:  # (only this key seals tickets: unreachable but safe)
            return "ticket malformed"
        return Ticket(name, public_key, secret, expires)
