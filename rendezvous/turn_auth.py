"""TURN authentication: long-term credentials (RFC 8489 section 9.2) with coturn's "TURN
REST API" usernames, and stateless nonces.

Credentials are those of coturn's ``use-auth-secret``/``static-auth-secret``: the username is
``"<unix expiry>:<name>"`` and the password ``base64(HMAC-SHA1(secret, username))``, so the
rendezvous can hand out relay credentials without sharing state with the relay, and the same
credentials work against a coturn configured with the same secret.

Nonces are stateless (expiry + HMAC bound to the client's address), so they need no table and
nothing to expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import structlog

from rendezvous.answers import error_answer
from rendezvous.turn_config import TurnConfig
from stunproto import AttrType, StunMessage
from stunproto.attributes import Address

log = structlog.get_logger()

_HEX = frozenset("0123456789abcdef")


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST API password for ``username`` (what coturn's use-auth-secret expects)."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def rest_credentials(secret: bytes, name: str, expires: int) -> tuple[str, str]:
    """(username, password) valid until the unix time ``expires``."""
    username = f"{expires}:{name}"
    return username, rest_password(secret, username)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    user: str  # the name part: quotas count per user, whatever the expiry
    key: bytes  # the long-term key: MESSAGE-INTEGRITY of requests and answers


class TurnAuthenticator:
    def __init__(self, config: TurnConfig, nonce_key: bytes) -> None:
        self.config = config
        self._nonce_key = nonce_key

    def authenticate(
        self, message: StunMessage, source: Address, now: float, wall_now: float
    ) -> Credentials | bytes:
        """Long-term credentials (RFC 8489 section 9.2.4): the credentials, or the error
        answer (a 401 or 438 challenge with REALM and a fresh NONCE, or a 400)."""
        if message.integrity_offset < 0 and message.integrity_sha256_offset < 0:
            return self._challenge(message, 401, "Unauthorized", source, now)
        username = message.get(AttrType.USERNAME)
        realm = message.get(AttrType.REALM)
        nonce = message.get(AttrType.NONCE)
        if not (isinstance(username, str) and isinstance(realm, str) and isinstance(nonce, str)):
            return self.error(message, 400, "Bad Request")
        user_key = self._user_key(username, wall_now) if realm == self.config.realm else None
        if user_key is None:
            log.debug("turn_auth_refused", username=username, reason="unknown or expired")
            return self._challenge(message, 401, "Unauthorized", source, now)
        user, key = user_key
        if not message.check_integrity(key):
            log.debug("turn_auth_refused", username=username, reason="integrity")
            return self._challenge(message, 401, "Unauthorized", source, now)
        if not self._nonce_valid(nonce, source, now):
            return self._challenge(message, 438, "Stale Nonce", source, now)
        return Credentials(username, user, key)

    def error(
        self,
        message: StunMessage,
        code: int,
        reason: str,
        *extra: tuple[int, object],
        unknown: tuple[int, ...] = (),
        key: bytes | None = None,
    ) -> bytes:
        """An error answer as the TURN server gives them: SOFTWARE if configured, and
        FINGERPRINT when the client uses it (as coturn does)."""
        return error_answer(
            message,
            code,
            reason,
            *extra,
            unknown=unknown,
            key=key,
            fingerprint=AttrType.FINGERPRINT in message,
            software=self.config.software,
        )

    def _challenge(
        self, message: StunMessage, code: int, reason: str, source: Address, now: float
    ) -> bytes:
        nonce = self._nonce(source, now)
        return self.error(
            message, code, reason, (AttrType.REALM, self.config.realm), (AttrType.NONCE, nonce)
        )

    def _nonce(self, source: Address, now: float) -> str:
        expiry = f"{max(0, int((now + self.config.nonce_lifetime) * 1000)):x}"
        return f"{expiry}.{self._nonce_mac(expiry, source)}"

    def _nonce_mac(self, expiry: str, source: Address) -> str:
        material = f"{expiry}|{source[0]}|{source[1]}".encode()
        return hmac.new(self._nonce_key, material, hashlib.sha256).hexdigest()[:24]

    def _nonce_valid(self, nonce: str, source: Address, now: float) -> bool:
        expiry, _, mac = nonce.partition(".")
        if not 0 < len(expiry) <= 16 or not _HEX.issuperset(expiry):
            return False
        # (On bytes: compare_digest refuses a str with non-ASCII characters, TypeError.)
        if not hmac.compare_digest(mac.encode(), self._nonce_mac(expiry, source).encode()):
            return False
        return int(expiry, 16) / 1000 > now

    def _user_key(self, username: str, wall_now: float) -> tuple[str, bytes] | None:
        """(user, long-term key) for a REST username that has not expired."""
        stamp, _, name = username.partition(":")
        # Bounded length: int() of thousands of digits is slow (and refused by Python 3.11).
        if not 0 < len(stamp) <= 12 or not stamp.isascii() or not stamp.isdigit():
            return None
        if int(stamp) <= wall_now:
            return None
        password = rest_password(self.config.shared_secret, username)
        key = hashlib.md5(f"{username}:{self.config.realm}:{password}".encode()).digest()
        return name or username, key
