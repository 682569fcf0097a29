"""Peer identity: Ed25519 key, its X25519 twin, the key file and its permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.identity import (
    Identity,
    IdentityError,
    fingerprint,
    load_or_create,
    verify,
)
from rvproto.keys import ed25519_to_x25519_public

# libsodium test/default/ed25519_convert.c (+ .exp): crypto_sign_ed25519_seed_keypair of this
# seed, then crypto_sign_ed25519_{pk,sk}_to_curve25519.
SODIUM_SEED = bytes.fromhex("421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee")
SODIUM_X25519_PK = bytes.fromhex("f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50")
SODIUM_X25519_SK = bytes.fromhex("8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166")

_P = 2**255 - 19


def test_libsodium_conversion_vector() -> None:
    identity = Identity.from_seed(SODIUM_SEED)
    assert identity.x25519_private.private_bytes_raw() == SODIUM_X25519_SK
    assert identity.x25519_public == SODIUM_X25519_PK
    assert ed25519_to_x25519_public(identity.public_key) == SODIUM_X25519_PK


@given(st.binary(min_size=32, max_size=32))
def test_public_conversion_matches_private_derivation(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    assert ed25519_to_x25519_public(identity.public_key) == identity.x25519_public


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"hello")
    assert verify(identity.public_key, signature, b"hello")
    assert not verify(identity.public_key, signature, b"hellO")
    assert not verify(Identity.generate().public_key, signature, b"hello")
    assert not verify(identity.public_key, signature[:-1], b"hello")
    assert not verify(identity.public_key[:31], signature, b"hello")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(identity.public_key, flipped, b"hello")


def test_generate_uses_injected_randomness() -> None:
    identity = Identity.generate(lambda n: SODIUM_SEED[:n])
    assert identity.x25519_public == SODIUM_X25519_PK


def test_fingerprint_is_ssh_like() -> None:
    fp = fingerprint(bytes(32))
    assert fp.startswith("SHA256:")
    assert "=" not in fp
    assert len(fp) == len("SHA256:") + 43
    assert fingerprint(bytes(32)) != fingerprint(b"\x01" + bytes(31))
    identity = Identity.from_seed(SODIUM_SEED)
    assert repr(identity) == f"Identity({fingerprint(identity.public_key)})"


def test_load_or_create_makes_private_file_and_dir(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sub" / "identity.pem"
    created = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create(path)
    assert again.public_key == created.public_key
    assert again.x25519_public == created.x25519_public
    assert [p.name for p in path.parent.iterdir()] == ["identity.pem"]  # no temp left over


def test_load_or_create_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create(path)
    os.chmod(path, 0o640)
    with pytest.raises(IdentityError):
        load_or_create(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_load_or_create_refuses_malformed_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(IdentityError):
        load_or_create(path)


def test_load_or_create_refuses_other_key_types(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "identity.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        load_or_create(path)


def test_load_or_create_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    load_or_create(real)
    link = tmp_path / "identity.pem"
    link.symlink_to(real)
    with pytest.raises(IdentityError):
        load_or_create(link)


def test_pem_round_trip() -> None:
    identity = Identity.from_seed(SODIUM_SEED)
    assert Identity.from_pem(identity.to_pem()).public_key == identity.public_key
