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


# The y coordinates of the eight points of small order (the 8-torsion): the identity (1),
# the point of order 2 (-1), those of order 4 (0), and those of order 8 (+-c; c as in
# libsodium's blocklist of small-order encodings).
_ORDER_8_Y = int.from_bytes(
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"
) & ((1 << 255) - 1)
_SMALL_ORDER_Y = frozenset({1, _P - 1, 0, _ORDER_8_Y, _P - _ORDER_8_Y})


def check_public_key(ed_pub: bytes) -> None:
    """What the rendezvous checks of a key at login, with no modular arithmetic at all
    (libsodium's way): 32 bytes, y canonically encoded, and not one of the small-order
    points. That it is on the curve follows from the login handshake: its X25519 form must
    be the static key the peer proved (:func:`is_x25519_form`). PublicKeyError if not."""
    if len(ed_pub) != PUBLIC_KEY_SIZE:
        raise PublicKeyError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(ed_pub)}")
    y = int.from_bytes(ed_pub, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise PublicKeyError("Ed25519 public key is not canonically encoded")
    if y in _SMALL_ORDER_Y:
        raise PublicKeyError("Ed25519 public key has small order")


def is_x25519_form(ed_pub: bytes, x_pub: bytes) -> bool:
    """Whether ``x_pub`` is the X25519 form of ``ed_pub`` (checked with
    :func:`check_public_key` first): u = (1 + y) / (1 - y), tested as u (1 - y) = 1 + y, one
    multiplication where the conversion needs an inversion. The login uses it: the peer's
    handshake proves ``x_pub``, so the key it registers must be the Ed25519 key behind it."""
    if len(x_pub) != PUBLIC_KEY_SIZE or len(ed_pub) != PUBLIC_KEY_SIZE:
        return False
    u = int.from_bytes(x_pub, "little")
    if u >= _P:  # (a non-canonical u would give one key two encodings)
        return False
    y = int.from_bytes(ed_pub, "little") & ((1 << 255) - 1)
    return u * (1 - y) % _P == (1 + y) % _P


def _small_order(x: int, y: int) -> bool:
    """Whether [8](x, y) is the identity: three doublings in extended coordinates
    (a = -1 twisted Edwards, "dbl-2008-hwcd"), which need no inversion, so the check costs
    a few dozen multiplications rather than the six modular powers affine doubling took."""
    X, Y, Z = x, y, 1
    for _ in range(3):
        A, B = X * X % _P, Y * Y % _P
        C = 2 * Z * Z % _P
        E = ((X + Y) * (X + Y) - A - B) % _P
        G = (B - A) % _P  # D + B, with D = a * A = -A
        F = (G - C) % _P
        H = (-A - B) % _P  # D - B
        X, Y, Z = E * F % _P, G * H % _P, F * G % _P
    return X == 0 and Y == Z


def ed25519_to_x25519_public(ed_pub: bytes) -> bytes:
    """The X25519 public key (Montgomery u) of an Ed25519 public key (Edwards point).

    Like libsodium's ``crypto_sign_ed25519_pk_to_curve25519``, rejects encodings that are
    not canonical, not on the curve, or of small order (those would give a Noise static key
    whose DH results are predictable). The server runs it on every login: two modular
    powers (about 60 us), where it once took nine.
    """
    if len(ed_pub) != PUBLIC_KEY_SIZE:
        raise PublicKeyError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(ed_pub)}")
    encoded = int.from_bytes(ed_pub, "little")
    sign = encoded >> 255
    y = encoded & ((1 << 255) - 1)
    if y >= _P:
        raise PublicKeyError("Ed25519 public key is not canonically encoded")
    # Recover x from y (RFC 8032 section 5.1.3) to prove the point is on the curve: the
    # square root of u/v with one modular power, x = u v^3 (u v^7)^((p-5)/8).
    y2 = y * y % _P
    u, v = (y2 - 1) % _P, (_D * y2 + 1) % _P
    v3 = v * v * v % _P
    x = u * v3 * pow(u * v3 * v3 * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 == (_P - u) % _P:
        x = x * _SQRT_M1 % _P
    elif vx2 != u:
        raise PublicKeyError("Ed25519 public key is not a point on the curve")
    if x == 0 and sign:
        raise PublicKeyError("Ed25519 public key is not canonically encoded")
    if x & 1 != sign:
        x = _P - x
    # Small order: [8]P is the identity (0, 1). Covers y = 1, where (1+y)/(1-y) is undefined.
    if _small_order(x, y):
        raise PublicKeyError("Ed25519 public key has small order")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")
