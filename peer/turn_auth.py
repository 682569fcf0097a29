"""The TURN client's side of the long-term credential mechanism (RFC 8489 section 9.2) with
REST-style credentials (username ``"<expiry>:<name>"``, password
``base64(HMAC-SHA1(secret, username))``).

The first request goes out bare; the 401 names REALM and NONCE, and from then on every
request carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY under the key
MD5(username:realm:password). A 438 (stale nonce) is retried with the new nonce for any
request; a 401 to a signed request only if the realm moved (otherwise the credentials are
wrong and a retry would earn the same answer).
"""

from __future__ import annotations

from stunproto import AttrType, StunMessage
from stunproto.message import long_term_key

UNAUTHORIZED, STALE_NONCE = 401, 438


class LongTermCredentials:
    __slots__ = ("_nonce", "_password", "_realm", "_username", "key")

    def __init__(self, username: str, password: str) -> None:
        self._username, self._password = username, password
        self._realm: str | None = None
        self._nonce: str | None = None
        self.key: bytes | None = None  # None until the server named its realm

    def replace(self, username: str, password: str) -> None:
        """New REST credentials (the old ones expire): used from the next request on."""
        self._username, self._password = username, password
        if self._realm is not None:
            self.key = long_term_key(username, self._realm, password)

    def attributes(self) -> list[tuple[int, object]]:
        """What a request carries to authenticate (nothing before the first 401)."""
        if self.key is None:
            return []
        assert self._realm is not None and self._nonce is not None
        return [
            (AttrType.USERNAME, self._username),
            (AttrType.REALM, self._realm),
            (AttrType.NONCE, self._nonce),
        ]

    def learn(self, response: StunMessage, code: int | None, signed_with: bytes | None) -> bool:
        """An error answer to a request signed with ``signed_with``: take the realm and
        nonce it names and say whether the request is worth sending again."""
        realm: str | None = response.get(AttrType.REALM)
        nonce: str | None = response.get(AttrType.NONCE)
        if nonce is None:
            return False
        if code == UNAUTHORIZED:
            # A 401 to a signed request means the credentials are wrong, unless the realm
            # moved; retrying would only earn the same answer.
            if realm is None or (signed_with is not None and realm == self._realm):
                return False
        elif code != STALE_NONCE:
            return False
        if realm is not None:
            self._realm = realm
        if self._realm is None:
            return False
        self._nonce = nonce
        self.key = long_term_key(self._username, self._realm, self._password)
        return True
