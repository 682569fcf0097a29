"""A peer's long-term identity: one Ed25519 key, used both to sign and (converted) for Noise.

Keeping a single key means the rendezvous vouches for exactly one thing per peer: its
Ed25519 public key. The Noise static key is *derived* from it, the way libsodium's
``crypto_sign_ed25519_sk_to_curve25519`` / ``crypto_sign_ed25519_pk_to_curve25519`` do, so a
peer that knows another's Ed25519 key can compute its X25519 key without trusting any other
announcement.

On disk the key is an unencrypted PKCS#8 PEM file (``-----BEGIN PRIVATE KEY-----``), which
``openssl pkey -in FILE -text`` can read. The file must be mode 0600: a key others can read
is not an identity any more, so we refuse it rather than use it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from natprobe.reach import os_reason
from peer.errors import PeerError

__all__ = [
    "Identity",
    "IdentityError",
    "fingerprint",
    "load_or_create",
    "verify",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


class IdentityError(PeerError, ValueError):
    """A malformed or unsafe identity: bad key bytes, bad key file, or loose permissions."""


class Identity:
    """One Ed25519 key pair plus the X25519 key pair derived from it for Noise."""

    __slots__ = ("_private", "public_key", "x25519_private", "x25519_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes_raw()
        seed = private_key.private_bytes_raw()
        # libsodium crypto_sign_ed25519_sk_to_curve25519: the X25519 scalar is the first half
        # of SHA-512(seed), clamped. X25519 clamps again on use; clamping here as well makes
        # the stored scalar byte-identical to libsodium's output.
        scalar = bytearray(hashlib.sha512(seed).digest()[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        self.x25519_private: X25519PrivateKey = X25519PrivateKey.from_private_bytes(bytes(scalar))
        self.x25519_public: bytes = self.x25519_private.public_key().public_bytes_raw()

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != SEED_SIZE:
            raise IdentityError(f"an Ed25519 seed is {SEED_SIZE} bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls, urandom: Callable[[int], bytes] = os.urandom) -> Identity:
        """A fresh identity; pass ``urandom`` to make tests reproducible."""
        return cls.from_seed(urandom(SEED_SIZE))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (the key-file format)."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> Identity:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise IdentityError(f"not an unencrypted PKCS#8 PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"the key file holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def __repr__(self) -> str:
        # Never the private half: identities end up in logs.
        return f"Identity({self.fingerprint})"


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key``.

    Malformed keys or signatures are simply "not valid": callers only need the verdict.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def fingerprint(public_key: bytes) -> str:
    """``SHA256:`` + unpadded base64 of SHA-256 over the raw 32-byte key.

    Looks like an OpenSSH fingerprint, but hashes the raw key rather than SSH's wire blob,
    so the two are not comparable.
    """
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_private_file(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IdentityError(f"{path} is a directory, not an identity key file")
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise IdentityError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} let others read the identity;"
            f" run chmod 600 {path}"
        )


def _load(path: Path) -> Identity:
    # Open first, then fstat the descriptor we read from: checking the path and reading it
    # separately would let a swap in between slip a loose file past the check.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # (a FIFO: no wait)
    try:
        _check_private_file(path, os.fstat(fd))
        data = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    try:
        return Identity.from_pem(data)
    except IdentityError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def load_or_create(path: Path, *, urandom: Callable[[int], bytes] = os.urandom) -> Identity:
    """Load the identity at ``path``, creating it (0600, parent 0700) on first run.

    Refuses (``IdentityError``) a file that group or others may access, or that is not an
    Ed25519 PKCS#8 PEM key. A new file appears atomically: written to a private temporary
    name and hard-linked into place, so a crash never leaves a truncated key and two
    processes racing on first run end up sharing one identity.
    """
    path = Path(path)
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: a symbolic link could point anywhere
            raise IdentityError(f"{path} is a symbolic link; give the key file itself") from None
        raise IdentityError(f"{path}: cannot read identity: {os_reason(exc)}") from None
    try:
        return _create(path, urandom)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot create identity: {os_reason(exc)}") from None


def _create(path: Path, urandom: Callable[[int], bytes]) -> Identity:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = Identity.generate(urandom)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(identity.to_pem())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another process won the first-run race; its identity is the one.
            return _load(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return identity
