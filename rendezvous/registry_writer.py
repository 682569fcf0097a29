"""The names database's writes, off the event loop: one thread with its own SQLite
connection writes what the registry queued, a transaction per batch.

A batch is everything queued while the previous one was written plus what arrives within
``BATCH_LINGER`` of its first row (or until ``MAX_BATCH`` rows), so that a login flood
costs a commit per batch and not one per login. A failed batch is kept and tried again
every ``retry_every`` seconds; the error is logged once, and the recovery once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger()

BATCH_LINGER = 0.005
MAX_BATCH = 2000
# A new name, or a returning owner's last_seen: the same row either way. An owner whose row
# an expiry sweep deleted while they were logging in is written back (they kept the name).
UPSERT = (
    "INSERT INTO owners (name, public_key, claimed_at, last_seen) VALUES (?, ?, ?, ?)"
    " ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen"
    " WHERE owners.public_key = excluded.public_key"
)
_EXPIRE = "DELETE FROM owners WHERE last_seen < ?"

Connect = Callable[[str], sqlite3.Connection]


def connect_writer(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    db.execute("PRAGMA synchronous=NORMAL")  # (per connection: WAL commits without fsync)
    return db


class NameWriter:
    """The writer thread and what it has still to write. ``queue``, ``expire`` and
    ``pending_owner`` are the loop thread's; everything shared is under one lock."""

    def __init__(
        self, path: str, *, connect: Connect = connect_writer, retry_every: float = 1.0
    ) -> None:
        self._path = path
        self._connect = connect
        self._retry_every = retry_every
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # (the thread waits for rows)
        self._done = threading.Condition(self._lock)  # (flush waits for batches)
        self._rows: dict[str, tuple[bytes, float]] = {}  # name -> key, last_seen: one a name
        self._expire_before: float | None = None
        self._new: dict[str, bytes] = {}  # names claimed whose row is not yet written
        self._queued = 0  # (rows and sweeps queued so far, and how many of them are written)
        self._written = 0
        self._attempts = 0
        self._closing = False
        self.error: str | None = None  # why the last batch failed; None while healthy
        self.expired = False  # a sweep deleted rows (the registry then drops its cache)
        self._thread = threading.Thread(target=self._run, name="names-writer", daemon=True)
        self._thread.start()

    def pending_owner(self, name: str) -> bytes | None:
        # (A dict read is atomic; the thread drops a name only after its commit, when a
        # SELECT on any connection sees the row.)
        return self._new.get(name)

    def queue(self, name: str, public_key: bytes, now: float, *, new: bool) -> None:
        with self._lock:
            if new:
                self._new[name] = public_key
            self._rows[name] = (public_key, now)
            self._queued += 1
            if len(self._rows) == 1 or len(self._rows) == MAX_BATCH:
                self._wake.notify()

    def expire(self, before: float) -> None:
        with self._lock:
            self._expire_before = before
            self._queued += 1
            self._wake.notify()

    def take_expired(self) -> bool:
        if not self.expired:  # (the usual case, read without the lock)
            return False
        with self._lock:
            self.expired = False
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until what is queued now is written (True), or the writer failed at a try
        made after this call, or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target, attempts = self._queued, self._attempts
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0 or (self.error is not None and self._attempts > attempts):
                    return False
                self._done.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued (one last try, even when failing) and end the thread within
        ``timeout``; whether it ended."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("names_writer_stuck", path=self._path, waited=timeout)
            return False
        return True

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        while True:
            with self._lock:
                rows, expire_before, upto, closing = self._next_batch()
            if not rows and expire_before is None:
                break  # (closing, and everything written)
            try:
                if db is None:
                    db = self._connect(self._path)
                expired = _write(db, rows, expire_before)
            except Exception as exc:  # (any failure: the rows stay queued, nothing is lost)
                _discard(db)
                db = None  # (a fresh connection at the next try)
                self._failed(rows, expire_before, exc)
                if closing:
                    log.error("names_unwritten", path=self._path, names=len(rows))
                    break
                continue
            self._succeeded(rows, upto, expired)
        _discard(db)

    def _next_batch(self) -> tuple[dict[str, tuple[bytes, float]], float | None, int, bool]:
        """Under the lock: wait for rows (linger for more, or wait to retry), take them."""
        while not self._rows and self._expire_before is None and not self._closing:
            self._wake.wait()
        if self.error is not None and not self._closing:
            self._wake.wait(self._retry_every)
        elif not self._closing:
            deadline = time.monotonic() + BATCH_LINGER
            while len(self._rows) < MAX_BATCH and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
        rows, self._rows = self._rows, {}
        expire_before, self._expire_before = self._expire_before, None
        return rows, expire_before, self._queued, self._closing

    def _failed(
        self, rows: dict[str, tuple[bytes, float]], expire_before: float | None, exc: Exception
    ) -> None:
        reason = reason_of(exc) if isinstance(exc, sqlite3.Error) else repr(exc)
        with self._lock:
            # Back in front of what was queued meanwhile (a newer last_seen wins).
            self._rows = rows | self._rows
            if expire_before is not None:
                self._expire_before = max(expire_before, self._expire_before or expire_before)
            if self.error is None:
                log.error("names_database_failed", path=self._path, error=reason)
            self.error = reason
            self._attempts += 1
            self._done.notify_all()

    def _succeeded(self, rows: dict[str, tuple[bytes, float]], upto: int, expired: bool) -> None:
        with self._lock:
            for name, (key, _) in rows.items():
                if self._new.get(name) == key:
                    del self._new[name]
            self._written = upto
            self._attempts += 1
            self.expired = self.expired or expired
            if self.error is not None:
                log.info("names_database_recovered", path=self._path)
                self.error = None
            self._done.notify_all()


def _write(
    db: sqlite3.Connection, rows: dict[str, tuple[bytes, float]], expire_before: float | None
) -> bool:
    """One transaction: the rows, then the sweep; whether the sweep deleted any."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if rows:
            db.executemany(UPSERT, [(name, key, at, at) for name, (key, at) in rows.items()])
        expired = expire_before is not None and db.execute(_EXPIRE, (expire_before,)).rowcount > 0
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return expired


def _discard(db: sqlite3.Connection | None) -> None:
    if db is not None:
        with contextlib.suppress(sqlite3.Error):
            db.close()


def reason_of(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the operator, in a few words."""
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
