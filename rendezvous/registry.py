"""Who owns which peer name: the first Ed25519 key to log in under a name owns it, for good
(until nobody logged in under it for ``name_ttl``).

Persisted in SQLite so that ownership survives restarts; ``":memory:"`` keeps it in memory
only (tests, or a deliberately forgetful server), written synchronously.

With a file, the event loop only reads: what decides a login (who owns a name) is the
in-memory state first, then an indexed SELECT on the loop's connection. The writes (new
names, last_seen, the hourly expiry sweep) go to one writer thread with its own connection
(``rendezvous.registry_writer``), a transaction per batch. A name claimed but not yet
written is owned at once, from the writer's pending map: a second key is refused before
the row lands.

What a crash (the process killed) can lose: the new names claimed but not yet committed,
that is the batch being written and what was queued since: normally the last ~5 ms of new
names (``BATCH_LINGER`` plus one commit), more only under a flood that outruns the writer
or while the writer fails (the names claimed before the failure showed; a failing writer
refuses new ones). With WAL and synchronous=NORMAL, a power loss can also undo the commits
since the last checkpoint. A lost name is free again: its owner keeps it by logging in
again before another key claims it. A lost last_seen is as if that login had not been
(the next one writes it). ``close`` writes everything queued (waiting at most 5 s).

If the writer fails (disk full, locked, read-only), the registry is unhealthy: a claim of
a NEW name raises RegistryError (the login answers 500 and its challenge stays usable),
the error is logged once, and names already owned keep logging in from memory. The failed
batch is retried every ``retry_every`` seconds; the first that succeeds makes it healthy.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from rendezvous.errors import RendezvousError
from rendezvous.registry_writer import UPSERT, Connect, NameWriter, connect_writer, reason_of

_CACHED_OWNERS = 1 << 18
DEFAULT_NAME_TTL = 365 * 86400.0  # a year without a login frees a name
_SEEN_EVERY = 86400.0  # last_seen is written at most this often per name (expiry is in days)
_SWEEP_EVERY = 3600.0
_CLOSE_WAIT = 5.0


class RegistryError(RendezvousError):
    """The names database cannot be used (corrupt, read-only, locked, not a database): the
    one-line reason, with the path, for the server to exit with."""


class NameRegistry:
    """Owners of names, in SQLite (WAL, synchronous=NORMAL). Known owners are cached in
    memory: a returning peer's login reads no disk and, but once a day, writes nothing."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        name_ttl: float = DEFAULT_NAME_TTL,
        clock: Callable[[], float] = time.time,
        connect: Connect = connect_writer,
        retry_every: float = 1.0,
    ) -> None:
        """``name_ttl``: seconds after a name's last login before it is free again (the
        wall clock, ``clock``, since names outlive restarts). ``connect`` opens the writer
        thread's connection; ``retry_every``: seconds between tries of a failed write."""
        self._path = str(path)
        self._owners: dict[str, bytes] = {}
        self._seen: dict[str, float] = {}  # a cached owner's last_seen, as written
        self._absent: str | None = None  # the name known() just found free (claim's next)
        self._name_ttl = name_ttl
        self._clock = clock
        self._next_sweep = 0.0
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None, timeout=0.5)
            self._check()
            self._db.execute(
                "DELETE FROM owners WHERE last_seen < ?", (clock() - name_ttl,)
            )  # (at start, before any login: the first sweep)
        except sqlite3.Error as exc:
            raise RegistryError(f"--db {self._path}: {reason_of(exc)}") from None
        self._next_sweep = clock() + _SWEEP_EVERY
        self._writer: NameWriter | None = None
        if self._path != ":memory:":
            self._writer = NameWriter(self._path, connect=connect, retry_every=retry_every)

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

    @property
    def healthy(self) -> bool:
        """False while the writer fails (new names are then refused)."""
        return self._writer is None or self._writer.error is None

    def claim(self, name: str, public_key: bytes) -> bool:
        """True if ``public_key`` owns ``name`` (now or from before); False if another key
        does. Two first logins racing for a name cannot both win (the first is owner at
        once). Raises RegistryError when the database fails (the caller answers 500)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        absent, self._absent = self._absent == name, None
        owner = None if absent else self._owner_of(name)
        if owner is None:
            self._write(name, public_key, now, new=True)
            self._cache(name, public_key, now)
            return True
        if owner == public_key and now - self._seen.get(name, -_SEEN_EVERY) >= _SEEN_EVERY:
            # Its login keeps the name: written at most once a day per name.
            self._write(name, public_key, now, new=False)
            self._seen[name] = now
        return owner == public_key

    def known(self, name: str) -> bool:
        """Whether ``name`` has an owner (a returning peer's, or one taken): a new name is
        what the per-source quota counts. A database failure counts as known (claim then
        raises, and the login is answered 500)."""
        try:
            owner = self._owner_of(name)
        except RegistryError:
            return True
        if owner is None:
            self._absent = name  # (so that claim, next, reads nothing again)
            return False
        return True

    def owner(self, name: str) -> bytes | None:
        """The key that owns ``name``, written or pending; None if it is free."""
        if self._writer is not None and (pending := self._writer.pending_owner(name)) is not None:
            return pending
        row = self._db.execute("SELECT public_key FROM owners WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def flush(self, timeout: float = _CLOSE_WAIT) -> bool:
        """Wait until every write queued so far is in the database; False if the writer
        failed meanwhile or ``timeout`` seconds passed."""
        return self._writer is None or self._writer.flush(timeout)

    def close(self) -> None:
        """Write what is queued and end the writer thread (waiting at most 5 s)."""
        if self._writer is not None:
            self._writer.close(_CLOSE_WAIT)
        self._db.close()

    def _owner_of(self, name: str) -> bytes | None:
        """The in-memory state (the cache, then what is not yet written), then the disk."""
        writer = self._writer
        if writer is not None and writer.take_expired():
            self._owners.clear()  # (a sweep deleted rows: some cached owners are gone)
            self._seen.clear()
        owner = self._owners.get(name)
        if owner is not None:
            return owner
        if writer is not None and (owner := writer.pending_owner(name)) is not None:
            return owner
        try:
            row = self._db.execute(
                "SELECT public_key, last_seen FROM owners WHERE name = ?", (name,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise RegistryError(f"names database: {reason_of(exc)}") from None
        if row is None:
            return None
        owner = bytes(row[0])
        self._cache(name, owner, row[1] if row[1] is not None else -_SEEN_EVERY)
        return owner

    def _write(self, name: str, public_key: bytes, now: float, *, new: bool) -> None:
        writer = self._writer
        if writer is None:
            try:
                self._db.execute(UPSERT, (name, public_key, now, now))
            except sqlite3.Error as exc:
                raise RegistryError(f"names database: {reason_of(exc)}") from None
            return
        if new and writer.error is not None:
            raise RegistryError(f"names database: {writer.error}")
        writer.queue(name, public_key, now, new=new)

    def _sweep(self, now: float) -> None:
        """Free the names nobody logged in under for ``name_ttl``: at start, then at most
        once an hour from ``claim``."""
        self._next_sweep = now + _SWEEP_EVERY
        before = now - self._name_ttl
        if self._writer is not None:
            self._writer.expire(before)
            return
        try:
            deleted = self._db.execute("DELETE FROM owners WHERE last_seen < ?", (before,))
        except sqlite3.Error as exc:
            raise RegistryError(f"names database: {reason_of(exc)}") from None
        if deleted.rowcount > 0:
            self._owners.clear()
            self._seen.clear()

    def _cache(self, name: str, owner: bytes, last_seen: float) -> None:
        if len(self._owners) >= _CACHED_OWNERS:
            self._owners.clear()  # (a cache: the database, and the pending map, have them all)
            self._seen.clear()
        self._owners[name] = owner
        self._seen[name] = last_seen
