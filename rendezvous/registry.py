"""Who owns which peer name: the first Ed25519 key to log in under a name owns it, for good.

Persisted in SQLite so that ownership survives restarts; ``":memory:"`` keeps it in memory
only (tests, or a deliberately forgetful server).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from rendezvous.errors import RendezvousError

_CACHED_OWNERS = 1 << 18
DEFAULT_NAME_TTL = 365 * 86400.0  # a year without a login frees a name
_SEEN_EVERY = 86400.0  # last_seen is written at most this often per name


class RegistryError(RendezvousError):
    """The names database cannot be used (corrupt, read-only, locked, not a database): the
    one-line reason, with the path, for the server to exit with."""


class NameRegistry:
    """Owners of names, in SQLite (WAL, synchronous=NORMAL: a commit per new name costs no
    fsync of its own, and a crash loses at most the last moments' new names, never the
    file). Known owners are cached in memory: a returning peer's login reads no disk."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        name_ttl: float = DEFAULT_NAME_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``name_ttl``: seconds after a name's last login before it is free again (the
        wall clock, ``clock``, since names outlive restarts)."""
        self._path = str(path)
        self._owners: dict[str, bytes] = {}
        self._seen: dict[str, float] = {}  # when a cached owner's last_seen was written
        self._name_ttl = name_ttl
        self._clock = clock
        self._next_expiry = 0.0
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None, timeout=0.5)
            self._check()
            self.expire_inactive()
        except sqlite3.Error as exc:
            raise RegistryError(f"--db {self._path}: {_reason(exc)}") from None

    def _check(self) -> None:
        """Open for real at start (SQLite opens lazily): the schema, a journal mode, an
        integrity check and a write, so that a bad file fails here and not at a login."""
        db = self._db
        if self._path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS owners ("
            " name TEXT PRIMARY KEY, public_key BLOB NOT NULL, claimed_at REAL NOT NULL)"
        )
        columns = {row[1] for row in db.execute("PRAGMA table_info(owners)")}
        if "last_seen" not in columns:  # (a database from before names expired)
            db.execute("ALTER TABLE owners ADD COLUMN last_seen REAL")
            db.execute("UPDATE owners SET last_seen = claimed_at WHERE last_seen IS NULL")
        verdict = db.execute("PRAGMA quick_check").fetchone()
        if verdict is None or verdict[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {verdict}")
        db.execute("BEGIN IMMEDIATE")  # (takes the write lock: read-only or locked fails)
        db.execute("ROLLBACK")

    def claim(self, name: str, public_key: bytes) -> bool:
        """True if ``public_key`` owns ``name`` (now or from before); False if another key
        does. Atomic: two first logins racing for a name cannot both win. Raises
        RegistryError when the database fails (the caller answers 500)."""
        now = self._clock()
        if now >= self._next_expiry:
            self.expire_inactive()
        owner = self._owners.get(name)
        try:
            if owner is None:
                self._db.execute(
                    "INSERT OR IGNORE INTO owners (name, public_key, claimed_at, last_seen)"
                    " VALUES (?, ?, ?, ?)",
                    (name, public_key, now, now),
                )
                owner = self.owner(name)
                if owner is None:
                    return False
                self._cache(name, owner)
            if owner == public_key and now - self._seen.get(name, -1.0) >= _SEEN_EVERY:
                # Its login keeps the name: written at most once a day per name.
                self._db.execute("UPDATE owners SET last_seen = ? WHERE name = ?", (now, name))
                self._seen[name] = now
        except sqlite3.Error as exc:
            raise RegistryError(f"names database: {_reason(exc)}") from None
        return owner == public_key

    def expire_inactive(self) -> int:
        """Free the names nobody logged in under for ``name_ttl`` seconds; how many. Runs
        at start and then at most once an hour, from ``claim``."""
        now = self._clock()
        self._next_expiry = now + 3600.0
        cursor = self._db.execute("DELETE FROM owners WHERE last_seen < ?", (now - self._name_ttl,))
        if cursor.rowcount:
            self._owners.clear()
            self._seen.clear()
        return max(cursor.rowcount, 0)

    def known(self, name: str) -> bool:
        """Whether ``name`` has an owner (a returning peer's, or one taken): a new name is
        what the per-source quota counts. A database failure counts as known (claim then
        raises, and the login is answered 500)."""
        if name in self._owners:
            return True
        try:
            owner = self.owner(name)
        except sqlite3.Error:
            return True
        if owner is None:
            return False
        self._cache(name, owner)  # (so that claim, next, reads nothing again)
        return True

    def _cache(self, name: str, owner: bytes) -> None:
        if len(self._owners) >= _CACHED_OWNERS:
            self._owners.clear()  # (a cache: the database has them all)
            self._seen.clear()
        self._owners[name] = owner
        self._seen[name] = -1.0  # (its last_seen is written at its next login)

    def owner(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT public_key FROM owners WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._db.close()


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return "not a usable SQLite database (corrupt, or another kind of file)"
    if "readonly" in text or "read-only" in text:
        return "read-only (the server must be able to write it)"
    if "locked" in text or "busy" in text:
        return "locked by another process (another rendezvous on the same file?)"
    if "unable to open" in text:
        return "cannot be opened (a missing directory, or no permission)"
    return text
