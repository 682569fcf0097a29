"""Who owns which peer name: the first Ed25519 key to log in under a name owns it, for good.

Persisted in SQLite so that ownership survives restarts; ``":memory:"`` keeps it in memory
only (tests, or a deliberately forgetful server).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


class NameRegistry:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS owners ("
            " name TEXT PRIMARY KEY, public_key BLOB NOT NULL, claimed_at REAL NOT NULL)"
        )

    def claim(self, name: str, public_key: bytes) -> bool:
        """True if ``public_key`` owns ``name`` (now or from before); False if another key
        does. Atomic: two first logins racing for a name cannot both win."""
        self._db.execute(
            "INSERT OR IGNORE INTO owners (name, public_key, claimed_at) VALUES (?, ?, ?)",
            (name, public_key, time.time()),
        )
        return self.owner(name) == public_key

    def owner(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT public_key FROM owners WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._db.close()
