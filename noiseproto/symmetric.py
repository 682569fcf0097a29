"""Noise's symmetric layer (specification revision 34, sections 5.1 and 5.2): the
:class:`CipherState` (k, n) and the :class:`SymmetricState` (ck, h, HKDF over HMAC-HASH)
that the handshake patterns of noiseproto.handshake drive.

Both copy cheaply, because the handshake works on a copy and commits only when a whole
message checked out (a forged datagram must not leave half a message mixed in)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = ["DHLEN", "HASHES", "KEYLEN", "TAGLEN", "CipherState", "NoiseError", "SymmetricState"]

DHLEN = 32
TAGLEN = 16
KEYLEN = 32
_MAX_NONCE = 2**64 - 1  # reserved by the spec; reaching it means the key is exhausted

HASHES: dict[str, Callable[..., Any]] = {
    "BLAKE2s": hashlib.blake2s,
    "BLAKE2b": hashlib.blake2b,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}


class NoiseError(ValueError):
    """A handshake message that is malformed, forged, or arrives out of turn (the other
    side's fault: the peer package counts it among its remote protocol errors)."""


_BLAKE2S_BLOCK = 64
_IPAD = int.from_bytes(b"\x36" * _BLAKE2S_BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLAKE2S_BLOCK, "big")


def _hmac_blake2s(key: bytes, data: bytes) -> bytes:
    """RFC 2104 HMAC over BLAKE2s for keys of at most one block (Noise's are 32 bytes), in
    a third of ``hmac.new``'s time: the standard library takes its slow path for a hash
    OpenSSL does not provide, and a login runs fifteen of these."""
    padded = int.from_bytes(key.ljust(_BLAKE2S_BLOCK, b"\x00"), "big")
    inner = hashlib.blake2s((padded ^ _IPAD).to_bytes(_BLAKE2S_BLOCK, "big") + data).digest()
    return hashlib.blake2s((padded ^ _OPAD).to_bytes(_BLAKE2S_BLOCK, "big") + inner).digest()


def _nonce(n: int) -> bytes:
    # ChaChaPoly nonce (Noise section 12.3): 32 zero bits, then n as 64-bit little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    """Noise section 5.1: an optional key and a message counter."""

    __slots__ = ("_aead", "k", "n")

    def __init__(self, k: bytes | None = None, n: int = 0) -> None:
        self.k = k
        self.n = n
        self._aead = ChaCha20Poly1305(k) if k is not None else None

    def has_key(self) -> bool:
        return self.k is not None

    def copy(self) -> CipherState:
        return CipherState(self.k, self.n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce exhausted")
        ciphertext = self._aead.encrypt(_nonce(self.n), plaintext, ad)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            plaintext = self._aead.decrypt(_nonce(self.n), ciphertext, ad)
        except InvalidTag:
            # n stays put on failure (section 5.1), so the next genuine message still opens.
            raise NoiseError("authentication failed") from None
        self.n += 1
        return plaintext


class SymmetricState:
    """Noise section 5.2: chaining key, handshake hash, and the current CipherState."""

    __slots__ = ("_hash", "cipher", "ck", "h", "hashlen")

    def __init__(self, protocol_name: bytes, hash_name: str) -> None:
        self._hash = HASHES[hash_name]
        self.hashlen: int = self._hash().digest_size
        if len(protocol_name) <= self.hashlen:
            self.h = protocol_name.ljust(self.hashlen, b"\x00")
        else:
            self.h = self._digest(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def copy(self) -> SymmetricState:
        clone = SymmetricState.__new__(SymmetricState)
        clone._hash = self._hash
        clone.hashlen = self.hashlen
        clone.h = self.h
        clone.ck = self.ck
        clone.cipher = self.cipher.copy()
        return clone

    def _digest(self, data: bytes) -> bytes:
        digest: bytes = self._hash(data).digest()
        return digest

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        if self._hash is hashlib.blake2s and len(key) <= _BLAKE2S_BLOCK:
            return _hmac_blake2s(key, data)
        return hmac.new(key, data, self._hash).digest()

    def hkdf(self, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        """Noise section 4.3 HKDF: HMAC-HASH extract with ck, then 2 or 3 expand blocks."""
        temp_key = self._hmac(self.ck, ikm)
        out: list[bytes] = []
        previous = b""
        for i in range(1, outputs + 1):
            previous = self._hmac(temp_key, previous + bytes([i]))
            out.append(previous)
        return tuple(out)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hkdf(ikm, 2)
        # 64-byte hashes yield 64-byte outputs; the cipher key is the first 32 (section 5.2).
        self.cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._digest(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = self.hkdf(b"", 2)
        return k1[:KEYLEN], k2[:KEYLEN]
