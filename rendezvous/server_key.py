"""The rendezvous's long-term key (docs/security.md): the X25519 static key that every login
handshake is made to, so that peers know they talk to this server and no other.

Kept in one file, PKCS#8 PEM, created 0600 (directory 0700) on first start and refused when
group or others may read it. Peers pin it on their first login (or take it from
``--server-key``); ``rendezvous key`` prints it. Losing the file makes every peer refuse the
server until they forget its pin, as SSH does with a changed host key.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from rendezvous.errors import ConfigError


def public_text(private: bytes) -> str:
    """The public key as peers write it (``--server-key``): base64 of its 32 bytes."""
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    return base64.b64encode(public).decode("ascii")


def fingerprint(private: bytes) -> str:
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    digest = hashlib.sha256(public).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_or_create(path: Path) -> bytes:
    """The 32 private bytes in ``path``, made on first use. ConfigError (one line) for a
    file that is loose, a link, not a key, or cannot be read or written."""
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symbolic link; give the key file itself") from None
        raise ConfigError(f"{path}: cannot read the server key: {exc.strerror}") from None
    try:
        return _create(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the server key: {exc.strerror}") from None


def _load(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} let others read the"
                f" server key; run chmod 600 {path}"
            )
        data = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{path}: not an unencrypted PKCS#8 PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an X25519 key")
    return key.private_bytes_raw()


def _create(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written under a private name and linked into place: never a truncated key, and two
    # servers racing on first start share one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _load(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key.private_bytes_raw()
