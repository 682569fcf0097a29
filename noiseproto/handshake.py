"""Noise IK handshake (``Noise_IK_25519_ChaChaPoly_BLAKE2s``), sans-I/O, on ``cryptography``.

The framework objects follow the Noise specification, revision 34, section 5: a
:class:`CipherState` (k, n) and a :class:`SymmetricState` (ck, h, HKDF over HMAC-HASH),
both in noiseproto.symmetric, and here the :class:`HandshakeState` that interprets
message-pattern tokens. Only the IK pattern is wired up::

    IK:
      <- s
      ...
      -> e, es, s, ss
      <- e, ee, se

This is WireGuard's handshake without the psk2 modifier. The hash is a parameter
(``NoiseConfig(hash_name=...)``) so the implementation can be checked against the published
vectors for BLAKE2s, BLAKE2b, SHA256 and SHA512.

Two properties matter to callers:

* the responder learns (and can refuse) the initiator's static key from
  :meth:`Responder.read_message1` *before* it answers anything;
* a failed read leaves the handshake state untouched, so a forged datagram that arrives
  before the genuine one cannot kill the handshake (UDP lets anyone inject).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from noiseproto.symmetric import (
    DHLEN,
    HASHES,
    TAGLEN,
    CipherState,
    NoiseError,
    SymmetricState,
)

__all__ = [
    "CipherState",
    "HandshakeState",
    "Initiator",
    "NoiseConfig",
    "NoiseError",
    "Responder",
    "SymmetricState",
    "TransportKeys",
]

MAX_MESSAGE = 65535  # Noise section 3: every message, handshake or transport, fits in 64 KiB.


# Pattern tokens. Pre-messages are (initiator's, responder's); messages alternate starting
# with the initiator.
_IK_PREMESSAGES: tuple[tuple[str, ...], tuple[str, ...]] = ((), ("s",))
_IK_MESSAGES: tuple[tuple[str, ...], ...] = (("e", "es", "s", "ss"), ("e", "ee", "se"))


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseConfig:
    """The Noise suite; only the hash varies (the DH is 25519, the cipher ChaChaPoly)."""

    hash_name: str = "BLAKE2s"

    def __post_init__(self) -> None:
        if self.hash_name not in HASHES:
            raise NoiseError(f"unsupported hash {self.hash_name!r}; pick one of {list(HASHES)}")

    @property
    def protocol_name(self) -> str:
        return f"Noise_IK_25519_ChaChaPoly_{self.hash_name}"


@dataclass(frozen=True, slots=True)
class TransportKeys:
    """The handshake's result from one side's point of view.

    ``send``/``receive`` are the ChaChaPoly keys of Split() (the initiator sends with the
    first); ``handshake_hash`` binds the whole transcript (channel binding).
    """

    send: bytes
    receive: bytes
    handshake_hash: bytes

    def __repr__(self) -> str:
        return f"TransportKeys(handshake_hash={self.handshake_hash.hex()})"


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # cryptography refuses an all-zero result (a low-order public key). Aborting is one
        # of the two behaviours Noise section 12.1 allows; it only ever hits forgeries.
        raise NoiseError("low-order public key") from None


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


class HandshakeState:
    """Noise section 5.3 for the IK pattern: keys, role, and the remaining message tokens.

    ``write_message``/``read_message`` interpret the tokens; reads work on a copy of the
    symmetric state and commit only when every token (and the payload tag) checked out.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        prologue: bytes,
        s: X25519PrivateKey,
        e: X25519PrivateKey | None = None,
        rs: bytes | None = None,
        config: NoiseConfig | None = None,
    ) -> None:
        config = config or NoiseConfig()
        self.initiator = initiator
        self.symmetric = SymmetricState(config.protocol_name.encode("ascii"), config.hash_name)
        self.s = s
        self.e = e
        self.rs = rs
        self.re: bytes | None = None
        self._next = 0  # index into _IK_MESSAGES
        self.symmetric.mix_hash(prologue)
        initiator_pre, responder_pre = _IK_PREMESSAGES
        for owner_is_initiator, tokens in ((True, initiator_pre), (False, responder_pre)):
            for _token in tokens:  # IK's pre-messages hold only "s"
                ours = owner_is_initiator == initiator
                if ours:
                    key = _public(s)
                else:
                    if rs is None or len(rs) != DHLEN:
                        raise NoiseError("IK needs the responder's 32-byte static key")
                    key = rs
                self.symmetric.mix_hash(key)

    @property
    def finished(self) -> bool:
        return self._next >= len(_IK_MESSAGES)

    def _my_turn(self) -> bool:
        return (self._next % 2 == 0) == self.initiator

    def _dh_token(
        self, symmetric: SymmetricState, token: str, re: bytes | None, rs: bytes | None
    ) -> None:
        # Tokens name (initiator's key, responder's key); each side uses the private half of
        # its own key and the public half of the other's.
        first, second = token[0], token[1]
        mine, theirs = (first, second) if self.initiator else (second, first)
        private = self.e if mine == "e" else self.s
        public = re if theirs == "e" else rs
        if private is None or public is None:
            raise NoiseError(f"token {token!r} before the keys it needs")
        symmetric.mix_key(_dh(private, public))

    def write_message(self, payload: bytes) -> bytes:
        if self.finished or not self._my_turn():
            raise NoiseError("not our turn to write a handshake message")
        if self.e is None:
            self.e = X25519PrivateKey.generate()
        # Work on a copy, like read_message: an oversized payload must not leave half a
        # message mixed into the transcript.
        symmetric = self.symmetric.copy()
        out = bytearray()
        for token in _IK_MESSAGES[self._next]:
            if token == "e":
                public_e = _public(self.e)
                out += public_e
                symmetric.mix_hash(public_e)
            elif token == "s":
                out += symmetric.encrypt_and_hash(_public(self.s))
            else:
                self._dh_token(symmetric, token, self.re, self.rs)
        out += symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise NoiseError(f"handshake message of {len(out)} bytes exceeds {MAX_MESSAGE}")
        self.symmetric = symmetric
        self._next += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.finished or self._my_turn():
            raise NoiseError("not expecting a handshake message now")
        if len(message) > MAX_MESSAGE:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE}")
        symmetric = self.symmetric.copy()
        re, rs = self.re, self.rs
        view = memoryview(message)
        for token in _IK_MESSAGES[self._next]:
            if token == "e":
                if len(view) < DHLEN:
                    raise NoiseError("handshake message truncated (ephemeral key)")
                re = bytes(view[:DHLEN])
                view = view[DHLEN:]
                symmetric.mix_hash(re)
            elif token == "s":
                size = DHLEN + TAGLEN if symmetric.cipher.has_key() else DHLEN
                if len(view) < size:
                    raise NoiseError("handshake message truncated (static key)")
                rs = symmetric.decrypt_and_hash(bytes(view[:size]))
                view = view[size:]
            else:
                self._dh_token(symmetric, token, re, rs)
        if symmetric.cipher.has_key() and len(view) < TAGLEN:
            raise NoiseError("handshake message truncated (payload tag)")
        payload = symmetric.decrypt_and_hash(bytes(view))
        # Everything authenticated: commit.
        self.symmetric, self.re, self.rs = symmetric, re, rs
        self._next += 1
        return payload

    def transport_keys(self) -> TransportKeys:
        if not self.finished:
            raise NoiseError("handshake not finished")
        k1, k2 = self.symmetric.split()
        send, receive = (k1, k2) if self.initiator else (k2, k1)
        return TransportKeys(send=send, receive=receive, handshake_hash=self.symmetric.h)


class Initiator:
    """The side that knows the responder's static key in advance (IK's ``<- s``)."""

    def __init__(
        self,
        static: X25519PrivateKey,
        remote_static: bytes,
        prologue: bytes,
        ephemeral: X25519PrivateKey | None = None,
        *,
        config: NoiseConfig | None = None,
    ) -> None:
        self._state = HandshakeState(
            initiator=True,
            prologue=prologue,
            s=static,
            e=ephemeral,
            rs=remote_static,
            config=config,
        )

    def write_message1(self, payload: bytes = b"") -> bytes:
        """``-> e, es, s, ss``: 96 bytes + payload (our static key travels encrypted)."""
        return self._state.write_message(payload)

    def read_message2(self, data: bytes) -> tuple[bytes, TransportKeys]:
        """``<- e, ee, se``: the responder's payload and the transport keys."""
        payload = self._state.read_message(data)
        return payload, self._state.transport_keys()


class Responder:
    """The side whose static key the initiator already has."""

    def __init__(
        self,
        static: X25519PrivateKey,
        prologue: bytes,
        ephemeral: X25519PrivateKey | None = None,
        *,
        config: NoiseConfig | None = None,
    ) -> None:
        self._state = HandshakeState(
            initiator=False,
            prologue=prologue,
            s=static,
            e=ephemeral,
            rs=None,
            config=config,
        )

    def read_message1(self, data: bytes) -> tuple[bytes, bytes]:
        """The initiator's static X25519 key and payload, both authenticated.

        Check the key (is it the one vouched for?) before calling :meth:`write_message2`;
        not answering is how a responder refuses.
        """
        payload = self._state.read_message(data)
        if self._state.rs is None:  # unreachable: the "s" token just set it
            raise NoiseError("initiator static key missing")
        return self._state.rs, payload

    def write_message2(self, payload: bytes = b"") -> tuple[bytes, TransportKeys]:
        message = self._state.write_message(payload)
        return message, self._state.transport_keys()


def random_ephemeral(urandom: Callable[[int], bytes] = os.urandom) -> X25519PrivateKey:
    """An ephemeral key from an injectable random source (tests pass a seeded one)."""
    return X25519PrivateKey.from_private_bytes(urandom(32))
