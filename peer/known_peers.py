"""Trust on first use for peer identities, like OpenSSH's ``known_hosts``.

The file holds one pin per line, ``NAME BASE64KEY`` (the raw 32-byte Ed25519 key in standard
base64), plus ``#`` comments and blank lines::

    # pinned by peer on first contact
    alice   Tj4JbC3U0d3Nxq1jFiwO3SWHUsZzUvOfjuCO2iZcGe0=

A name seen for the first time is NEW (the caller decides whether to :meth:`remember` it);
the same key again is a MATCH; a different key is CHANGED, which callers must refuse loudly
(:class:`KeyChanged`) -- either the peer reinstalled, or someone is in the middle. Fixing a
CHANGED pin is a human decision: :meth:`KnownPeers.forget` or edit the file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import os
import stat
from pathlib import Path

from peer.errors import PeerError
from peer.identity import PUBLIC_KEY_SIZE, fingerprint

__all__ = ["KeyChanged", "KnownPeers", "KnownPeersError", "Verdict"]


class KnownPeersError(PeerError, ValueError):
    """A malformed known-peers file (with path and line number), bad name/key, or loose mode."""


class KeyChanged(PeerError):
    """A pinned peer presented a different key. Never continue silently."""

    def __init__(self, name: str, old: bytes, new: bytes, path: Path | None = None) -> None:
        self.name = name
        self.old = old
        self.new = new
        where = f" (pinned in {path})" if path is not None else ""
        super().__init__(
            f"PEER KEY CHANGED for {name!r}: pinned {fingerprint(old)}{where}, "
            f"presented {fingerprint(new)}. Someone may be impersonating this peer; "
            f"refusing. If the peer really has a new key, remove the old pin."
        )


class Verdict(enum.Enum):
    NEW = "new"
    MATCH = "match"
    CHANGED = "changed"


def _valid_name(name: str) -> bool:
    return bool(name) and not name.startswith("#") and not any(c.isspace() for c in name)


def _decode_key(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == PUBLIC_KEY_SIZE else None


class KnownPeers:
    """The pin file at ``path`` (absent means empty); loaded once, appended to on remember."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pins: dict[str, bytes] = {}
        self._load()

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            # Readable by others is fine (public keys); writable by others is not: whoever
            # can write the file can pin their own key under any name.
            if st.st_mode & 0o022:
                raise KnownPeersError(
                    f"{self.path}: permissions {stat.S_IMODE(st.st_mode):04o} let others"
                    f" rewrite the pins; run chmod 600 {self.path}"
                )
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KnownPeersError(f"{self.path}: not UTF-8 text") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = stripped.split()
            if len(fields) != 2:
                raise KnownPeersError(f"{self.path}:{lineno}: expected 'NAME BASE64KEY'")
            name, encoded = fields
            key = _decode_key(encoded)
            if key is None:
                raise KnownPeersError(
                    f"{self.path}:{lineno}: key is not base64 of {PUBLIC_KEY_SIZE} bytes"
                )
            previous = self._pins.get(name)
            if previous is not None and previous != key:
                # Two pins for one name would make the verdict depend on line order.
                raise KnownPeersError(f"{self.path}:{lineno}: {name!r} is pinned twice")
            self._pins[name] = key

    def __contains__(self, name: object) -> bool:
        return name in self._pins

    def get(self, name: str) -> bytes | None:
        return self._pins.get(name)

    def pinned(self, name: str) -> bytes:
        """The key pinned for ``name``; ``KeyError`` if there is none."""
        return self._pins[name]

    def check(self, name: str, public_key: bytes) -> Verdict:
        pinned = self._pins.get(name)
        if pinned is None:
            return Verdict.NEW
        return Verdict.MATCH if pinned == public_key else Verdict.CHANGED

    def require(self, name: str, public_key: bytes) -> Verdict:
        """``check``, but CHANGED raises :class:`KeyChanged` instead of returning."""
        verdict = self.check(name, public_key)
        if verdict is Verdict.CHANGED:
            raise KeyChanged(name, self._pins[name], public_key, self.path)
        return verdict

    def pin(self, name: str, public_key: bytes) -> Verdict:
        """Trust on first use: remember a NEW key, accept a MATCH, raise on CHANGED."""
        verdict = self.require(name, public_key)
        if verdict is Verdict.NEW:
            self.remember(name, public_key)
        return verdict

    def remember(self, name: str, public_key: bytes) -> None:
        """Append a pin (file created 0600, directory 0700). Never overwrites a pin."""
        if not _valid_name(name):
            raise KnownPeersError(f"peer name {name!r} must be non-empty without whitespace")
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise KnownPeersError(f"a peer key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}")
        pinned = self._pins.get(name)
        if pinned == public_key:
            return
        if pinned is not None:
            raise KeyChanged(name, pinned, public_key, self.path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{name} {base64.b64encode(public_key).decode('ascii')}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            # A file whose last line lacks its newline would swallow our pin into that line.
            if f.tell() > 0 and not self._ends_with_newline():
                line = "\n" + line
            f.write(line)
        self._pins[name] = public_key

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def forget(self, name: str) -> bool:
        """Drop every pin for ``name``, keeping other lines; atomic rewrite. True if found."""
        if name not in self._pins:
            return False
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if ln.split()[:1] != [name]]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        del self._pins[name]
        return True
