"""Key conversion shared by server and peer: Ed25519 public key to its X25519 form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rvproto.keys import PublicKeyError, ed25519_to_x25519_public

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
