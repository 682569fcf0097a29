"""Key conversions both sides need: the X25519 (Noise) form of an Ed25519 public key.

The rendezvous vouches for one thing per peer, its Ed25519 public key; each side derives
the X25519 static key for the Noise handshake from it, the way libsodium's
``crypto_sign_ed25519_pk_to_curve25519`` does. The server uses the same check to refuse
keys with no safe X25519 form at login.
"""

from __future__ import annotations

PUBLIC_KEY_SIZE = 32

# Curve25519 field and the twisted Edwards constant d = -121665/121666 (RFC 8032 section 5.1).
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


class PublicKeyError(ValueError):
    """An Ed25519 public key that is malformed, not canonical, or of small order."""


def _edwards_add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def ed25519_to_x25519_public(ed_pub: bytes) -> bytes:
    """The X25519 public key (Montgomery u) of an Ed25519 public key (Edwards point).

    Like libsodium's ``crypto_sign_ed25519_pk_to_curve25519``, rejects encodings that are
    not canonical, not on the curve, or of small order (those would give a Noise static key
    whose DH results are predictable). Speed is irrelevant: this runs once per peer.
    """
    if len(ed_pub) != PUBLIC_KEY_SIZE:
        raise PublicKeyError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(ed_pub)}")
    encoded = int.from_bytes(ed_pub, "little")
    sign = encoded >> 255
    y = encoded & ((1 << 255) - 1)
    if y >= _P:
        raise PublicKeyError("Ed25519 public key is not canonically encoded")
    # Recover x from y (RFC 8032 section 5.1.3) to prove the point is on the curve.
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if x * x % _P != x2:
        x = x * _SQRT_M1 % _P
    if x * x % _P != x2:
        raise PublicKeyError("Ed25519 public key is not a point on the curve")
    if x == 0 and sign:
        raise PublicKeyError("Ed25519 public key is not canonically encoded")
    if x & 1 != sign:
        x = _P - x
    # Small order: [8]P is the identity (0, 1). Covers y = 1, where (1+y)/(1-y) is undefined.
    point = (x, y)
    for _ in range(3):
        point = _edwards_add(point, point)
    if point == (0, 1):
        raise PublicKeyError("Ed25519 public key has small order")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")
