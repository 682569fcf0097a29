"""Key conversion shared by server and peer: Ed25519 public key to its X25519 form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.identity import Identity
from rvproto.keys import PublicKeyError, check_public_key, ed25519_to_x25519_public

_P = 2**255 - 19


def test_public_conversion_is_the_birational_map() -> None:
    # Independent cross-check of u = (1 + y) / (1 - y) on the Ed25519 base point, whose
    # Montgomery image is the X25519 base point u = 9 (RFC 7748 section 4.1).
    base_y = 4 * pow(5, _P - 2, _P) % _P
    assert ed25519_to_x25519_public(base_y.to_bytes(32, "little")) == (9).to_bytes(32, "little")


@pytest.mark.parametrize(
    "encoded",
    [
        bytes(32),  # y = 0: order 4
        (1).to_bytes(32, "little"),  # the identity (y = 1): u would divide by zero
        (_P - 1).to_bytes(32, "little"),  # y = -1: order 2
        (_P).to_bytes(32, "little"),  # y = p: non-canonical
        (2**255 - 1).to_bytes(32, "little"),  # y >= p with the sign bit set
        (1 | (1 << 255)).to_bytes(32, "little"),  # identity with x = 0 but sign bit set
        # An order-8 point (from the well-known small-order list, e.g. libsodium's blocklist).
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        (2).to_bytes(32, "little"),  # y = 2 is not on the curve
        b"\x01" * 31,  # wrong length
    ],
)
def test_public_conversion_rejects_bad_points(encoded: bytes) -> None:
    with pytest.raises(PublicKeyError):
        ed25519_to_x25519_public(encoded)


@given(st.binary(max_size=40))
def test_public_conversion_raises_only_identity_error(data: bytes) -> None:
    try:
        out = ed25519_to_x25519_public(data)
    except PublicKeyError:
        return
    assert len(out) == 32


_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def _reference(encoded: bytes) -> bytes | None:
    """The textbook conversion (affine doubling, a modular inverse per step): the fast
    one must agree with it on every input."""
    value = int.from_bytes(encoded, "little")
    sign, y = value >> 255, value & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if x * x % _P != x2:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x * x % _P != x2 or (x == 0 and sign):
        return None
    if x & 1 != sign:
        x = _P - x
    px, py = x, y
    for _ in range(3):
        t = _D * px * px * py * py % _P
        px, py = (
            2 * px * py * pow(1 + t, _P - 2, _P) % _P,
            (py * py + px * px) * pow(1 - t, _P - 2, _P) % _P,
        )
    if (px, py) == (0, 1):
        return None
    return ((1 + y) * pow(1 - y, _P - 2, _P) % _P).to_bytes(32, "little")


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_the_fast_check_agrees_with_the_textbook_one(value: int) -> None:
    encoded = value.to_bytes(32, "little")
    try:
        fast: bytes | None = ed25519_to_x25519_public(encoded)
    except PublicKeyError:
        fast = None
    assert fast == _reference(encoded)


def test_every_small_order_point_is_refused_and_agrees() -> None:
    # The 8-torsion: y = 1, -1, 0 and the order-8 points' y (and their sign variants).
    order8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    order8_y = int.from_bytes(order8, "little") & ((1 << 255) - 1)
    for y in (1, _P - 1, 0, order8_y, _P - order8_y):
        for sign in (0, 1):
            encoded = (y | (sign << 255)).to_bytes(32, "little")
            assert _reference(encoded) is None
            with pytest.raises(PublicKeyError):
                ed25519_to_x25519_public(encoded)


@given(st.binary(min_size=32, max_size=32))
def test_the_login_check_refuses_what_the_conversion_refuses_but_points_off_the_curve(
    encoded: bytes,
) -> None:
    # check_public_key leaves "not on the curve" to the signature check (C decodes the
    # point); for everything else it agrees with the full conversion.
    try:
        check_public_key(encoded)
    except PublicKeyError:
        assert _reference(encoded) is None
        return
    try:
        ed25519_to_x25519_public(encoded)
    except PublicKeyError as exc:
        assert "not a point on the curve" in str(exc)


def test_a_real_key_passes_the_login_check_and_an_order_8_point_does_not() -> None:
    check_public_key(Identity.generate().public_key)
    with pytest.raises(PublicKeyError, match="small order"):
        check_public_key(
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
        )
