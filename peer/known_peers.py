"""Trust on first use for peer identities, like OpenSSH's ``known_hosts``.

The file holds one pin per line, ``NAME BASE64KEY SERVER`` (the raw 32-byte Ed25519 key in
standard base64; SERVER is the base64 key of the rendezvous that introduced it, since a name
means something only at one server), the rendezvous servers' own keys as ``@HOST:PORT
BASE64KEY``, plus ``#`` comments and blank lines::

    @203.0.113.10:3478 NxGGDvcFQGOXX/S7DJSb7LQU+FhrLDkiXlOEogKFaUc=
    alice Tj4JbC3U0d3Nxq1jFiwO3SWHUsZzUvOfjuCO2iZcGe0= NxGGDvcFQGOXX/S7DJSb7LQU+FhrLDkiXlOEogKFaUc=

A pin without SERVER (written before pins were per server) holds at every server.

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

from natprobe.reach import os_reason
from peer.errors import PeerError
from peer.identity import PUBLIC_KEY_SIZE, fingerprint
from rvproto.names import NAME_RULE, InvalidName, canonical_name, is_canonical

__all__ = ["NAME_RULE", "KeyChanged", "KnownPeers", "KnownPeersError", "Verdict", "name_problem"]


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


def name_problem(name: object) -> str | None:
    """None for a name a peer may log in and be pinned under (in any case: "Alice" is
    "alice", rvproto.names); else what is wrong with it and the rule, in one line."""
    if not isinstance(name, str):
        return f"no peer name; {NAME_RULE}"
    try:
        canonical_name(name)
    except InvalidName as exc:
        return str(exc)
    return None


def _line_name(line: str) -> str | None:
    """The canonical name a pin line is for, or ``@HOST:PORT`` for a server's (None: a
    comment, blank, or no name)."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if fields[0].startswith("@"):
        return fields[0]
    try:
        return canonical_name(fields[0])
    except InvalidName:
        return None


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
        self._pins: dict[tuple[bytes | None, str], bytes] = {}  # (server key, name) -> key
        self._servers: dict[str, bytes] = {}  # "@host:port" -> the server's key
        self._load()

    def _load(self) -> None:
        try:
            raw = self._read()
        except FileNotFoundError:
            return
        except OSError as exc:  # a directory, no permission, ...: one line, with the path
            raise KnownPeersError(f"{self.path}: cannot read: {os_reason(exc)}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KnownPeersError(f"{self.path}: not UTF-8 text") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = stripped.split()
            if fields[0].startswith("@") and len(fields) == 2:
                server_key = _decode_key(fields[1])
                if server_key is None:
                    raise KnownPeersError(f"{self.path}:{lineno}: server key is not base64")
                self._servers[fields[0]] = server_key
                continue
            if len(fields) not in (2, 3):
                raise KnownPeersError(f"{self.path}:{lineno}: expected 'NAME BASE64KEY SERVER'")
            written, encoded = fields[:2]
            server = _decode_key(fields[2]) if len(fields) == 3 else None
            if len(fields) == 3 and server is None:
                raise KnownPeersError(f"{self.path}:{lineno}: server key is not base64")
            try:
                name = canonical_name(written)  # (a pin from before names were folded)
            except InvalidName as exc:
                raise KnownPeersError(f"{self.path}:{lineno}: {exc}") from None
            key = _decode_key(encoded)
            if key is None:
                raise KnownPeersError(
                    f"{self.path}:{lineno}: key is not base64 of {PUBLIC_KEY_SIZE} bytes"
                )
            previous = self._pins.get((server, name))
            if previous is not None and previous != key:
                # Two pins for one name would make the verdict depend on line order.
                raise KnownPeersError(f"{self.path}:{lineno}: {name!r} is pinned twice")
            self._pins[(server, name)] = key

    def _read(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO must not block us)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise KnownPeersError(f"{self.path} is a directory, not a known-peers file")
            if not stat.S_ISREG(st.st_mode):
                raise KnownPeersError(f"{self.path} is not a regular file")
            # Readable by others is fine (public keys); writable by others is not: whoever
            # can write the file can pin their own key under any name.
            if st.st_mode & 0o022:
                raise KnownPeersError(
                    f"{self.path}: permissions {stat.S_IMODE(st.st_mode):04o} let others"
                    f" rewrite the pins; run chmod 600 {self.path}"
                )
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def __contains__(self, name: object) -> bool:
        return any(pinned == name for _, pinned in self._pins)

    def get(self, name: str, server: bytes | None = None) -> bytes | None:
        """The key pinned for ``name`` at ``server`` (or by a pin for every server)."""
        return self._pins.get((server, name)) or self._pins.get((None, name))

    def pinned(self, name: str, server: bytes | None = None) -> bytes:
        """The key pinned for ``name``; ``KeyError`` if there is none."""
        key = self.get(name, server)
        if key is None:
            raise KeyError(name)
        return key

    def check(self, name: str, public_key: bytes, server: bytes | None = None) -> Verdict:
        pinned = self.get(name, server)
        if pinned is None:
            return Verdict.NEW
        return Verdict.MATCH if pinned == public_key else Verdict.CHANGED

    def require(self, name: str, public_key: bytes, server: bytes | None = None) -> Verdict:
        """``check``, but CHANGED raises :class:`KeyChanged` instead of returning."""
        verdict = self.check(name, public_key, server)
        if verdict is Verdict.CHANGED:
            raise KeyChanged(name, self.pinned(name, server), public_key, self.path)
        return verdict

    def pin(self, name: str, public_key: bytes, server: bytes | None = None) -> Verdict:
        """Trust on first use: remember a NEW key, accept a MATCH, raise on CHANGED."""
        verdict = self.require(name, public_key, server)
        if verdict is Verdict.NEW:
            self.remember(name, public_key, server)
        return verdict

    def server_key(self, server: str) -> bytes | None:
        """The key pinned for the rendezvous at ``server`` ("host:port")."""
        return self._servers.get("@" + server)

    def pin_server(self, server: str, key: bytes) -> None:
        """Pin a rendezvous's key, proven by its login handshake (never replaces a pin)."""
        if "@" + server in self._servers:
            return
        self._append(f"@{server} {base64.b64encode(key).decode('ascii')}\n", f"@{server}")
        self._servers["@" + server] = key

    def remember(self, name: str, public_key: bytes, server: bytes | None = None) -> None:
        """Append a pin (file created 0600, directory 0700). Never overwrites a pin."""
        if not is_canonical(name):
            # (What the rendezvous introduces, and what a line of the file can hold.)
            raise KnownPeersError(f"cannot pin {name!r}: {name_problem(name) or 'not canonical'}")
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise KnownPeersError(f"a peer key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}")
        pinned = self.get(name, server)
        if pinned == public_key:
            return
        if pinned is not None:
            raise KeyChanged(name, pinned, public_key, self.path)
        scope = "" if server is None else " " + base64.b64encode(server).decode("ascii")
        self._append(f"{name} {base64.b64encode(public_key).decode('ascii')}{scope}\n", name)
        self._pins[(server, name)] = public_key

    def _append(self, line: str, what: str) -> None:
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                # A file whose last line lacks its newline would swallow our pin into it.
                if f.tell() > 0 and not self._ends_with_newline():
                    line = "\n" + line
                f.write(line)
        except OSError as exc:
            raise KnownPeersError(f"{self.path}: cannot pin {what!r}: {os_reason(exc)}") from None

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def items(self) -> list[tuple[str, bytes, bytes | None]]:
        """Every peer pin, (name, key, server key or None for every server), by name."""
        pins = [(name, key, server) for (server, name), key in self._pins.items()]
        return sorted(pins, key=lambda pin: (pin[0], pin[2] or b""))

    def servers(self) -> list[tuple[str, bytes]]:
        """Every rendezvous pin, ("host:port", key)."""
        return sorted((server[1:], key) for server, key in self._servers.items())

    def forget(self, name: str) -> bool:
        """Drop every pin for ``name`` (at every server; ``@host:port`` for a server's own),
        keeping other lines; atomic rewrite. True if found."""
        if name not in self and name not in self._servers:
            return False
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if _line_name(ln) != name]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._pins = {scope: key for scope, key in self._pins.items() if scope[1] != name}
        self._servers.pop(name, None)
        return True
