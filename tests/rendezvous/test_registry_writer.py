"""The names database's writes leave the event loop: a claimed name is owned before its row
lands, a batch is one transaction, a failing writer refuses new names (and known names
still log in) until it recovers, and close() writes what is queued.

No test sleeps: each waits on the writer (flush) or on an event, with a timeout."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rendezvous import registry_writer
from rendezvous.registry import NameRegistry, RegistryError

WAIT = 10.0  # (seconds: only ever reached when something is broken)
A, B = b"a" * 32, b"b" * 32


class _Writer(sqlite3.Connection):
    """The writer thread's connection, observed: its commits and batches counted, its
    transactions held at BEGIN while ``gate`` is closed, failing while ``failing``."""

    gate = threading.Event()
    entered = threading.Event()  # (the writer reached BEGIN)
    failing = False
    commits = 0
    batches: list[list[str]] = []  # noqa: RUF012 (reset per test by the fixture)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE":
            _Writer.entered.set()
            assert _Writer.gate.wait(WAIT)
            if _Writer.failing:
                raise sqlite3.OperationalError("database or disk is full")
        if sql == "COMMIT":
            _Writer.commits += 1
        return super().execute(sql, *args)

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        rows = list(rows)
        _Writer.batches.append([row[0] for row in rows])
        return super().executemany(sql, rows)


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=0.5, factory=_Writer)


@pytest.fixture(autouse=True)
def _writer_state() -> Iterator[None]:
    _Writer.gate.set()
    _Writer.entered.clear()
    _Writer.failing = False
    _Writer.commits = 0
    _Writer.batches = []
    before = set(threading.enumerate())
    yield
    _Writer.gate.set()  # (never leave a writer thread waiting)
    left = [t for t in set(threading.enumerate()) - before if t.name == "names-writer"]
    assert not left, "the test left a writer thread running"


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _on_disk(path: Path) -> dict[str, tuple[bytes, float]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, public_key, last_seen FROM owners").fetchall()
    finally:
        db.close()
    return {name: (bytes(key), seen) for name, key, seen in rows}


def _registry(path: Path, **options: Any) -> NameRegistry:
    return NameRegistry(path, connect=_connect, **options)


def test_a_claimed_name_is_owned_before_its_write_lands(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    registry = _registry(path)
    try:
        _Writer.gate.clear()
        assert registry.claim("alice", A)
        assert _Writer.entered.wait(WAIT)  # (the writer holds alice's row, uncommitted)
        assert "alice" not in _on_disk(path)
        assert registry.known("alice") and registry.owner("alice") == A
        assert not registry.claim("alice", B)  # the second key is refused at once
        _Writer.gate.set()
        assert registry.flush(WAIT)
        assert _on_disk(path)["alice"][0] == A
        assert registry.claim("alice", A) and not registry.claim("alice", B)
    finally:
        registry.close()


def test_a_login_flood_is_one_commit_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    registry = _registry(path)
    try:
        _Writer.gate.clear()
        assert registry.claim("first", A)
        assert _Writer.entered.wait(WAIT)
        names = [f"peer{index}" for index in range(500)]
        for name in names:
            assert not registry.known(name) and registry.claim(name, A)
        _Writer.gate.set()
        assert registry.flush(WAIT)
        assert _Writer.batches == [["first"], names] and _Writer.commits == 2
        assert len(_on_disk(path)) == 501
    finally:
        registry.close()


def test_last_seen_is_coalesced_and_written_at_most_daily(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    clock = _Clock()
    registry = _registry(path, clock=clock)
    try:
        _Writer.gate.clear()
        assert registry.claim("alice", A)
        assert _Writer.entered.wait(WAIT)
        for _ in range(2):  # two logins a day and a half apart, while the writer is busy
            clock.now += 1.5 * 86400
            assert registry.claim("alice", A)
        _Writer.gate.set()
        assert registry.flush(WAIT)
        assert _Writer.batches == [["alice"], ["alice"]]  # (one pending update, the last)
        assert _on_disk(path)["alice"][1] == clock.now
        clock.now += 3600
        assert registry.claim("alice", A) and registry.flush(WAIT)
        assert len(_Writer.batches) == 2  # (an hour later: no row written; a sweep, perhaps)
    finally:
        registry.close()
    # After a restart the day counts from the written last_seen: no write at the first login.
    again = _registry(path, clock=clock)
    try:
        assert again.claim("alice", A) and again.flush(WAIT)
        assert len(_Writer.batches) == 2
    finally:
        again.close()


def test_a_failing_writer_refuses_new_names_and_known_ones_still_log_in(
    tmp_path: Path,
) -> None:
    path = tmp_path / "names.sqlite"
    registry = _registry(path, retry_every=0.01)
    try:
        assert registry.claim("alice", A) and registry.flush(WAIT)
        with capture_logs() as logs:
            _Writer.failing = True
            assert registry.claim("bob", B)  # (healthy when claimed: owned, in memory)
            assert not registry.flush(WAIT) and not registry.flush(WAIT)  # two failed tries
            assert not registry.healthy
            with pytest.raises(RegistryError, match="disk is full"):
                registry.claim("carol", A)
            assert registry.claim("alice", A) and registry.claim("bob", B)
            assert not registry.claim("bob", A) and registry.known("bob")
            _Writer.failing = False
            assert registry.flush(WAIT) and registry.healthy  # the retry succeeded
        events = [entry["event"] for entry in logs]
        assert events == ["names_database_failed", "names_database_recovered"]
        assert registry.claim("carol", A) and registry.flush(WAIT)
        assert set(_on_disk(path)) == {"alice", "bob", "carol"}
    finally:
        registry.close()


def test_a_database_locked_by_another_process_is_a_failure_then_a_recovery(
    tmp_path: Path,
) -> None:
    path = tmp_path / "names.sqlite"
    registry = NameRegistry(path, retry_every=0.01)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        assert registry.claim("alice", A) and registry.flush(WAIT)
        holder.execute("BEGIN EXCLUSIVE")
        assert registry.claim("bob", B)
        assert not registry.flush(WAIT)  # (after the writer's 0.5 s busy timeout)
        with pytest.raises(RegistryError, match="locked by another process"):
            registry.claim("carol", A)
        assert registry.claim("alice", A)  # (from memory)
        assert registry.owner("alice") == A  # (and the disk is read under a writer's lock)
        holder.execute("ROLLBACK")
        assert registry.flush(WAIT) and registry.healthy
        assert set(_on_disk(path)) == {"alice", "bob"}
    finally:
        holder.close()
        registry.close()


def test_close_writes_what_is_queued_and_ends_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_writer, "BATCH_LINGER", 3600.0)  # (only close ends it)
    path = tmp_path / "names.sqlite"
    registry = _registry(path)
    names = [f"peer{index}" for index in range(100)]
    for name in names:
        assert registry.claim(name, A)
    registry.close()
    assert set(_on_disk(path)) == set(names) and _Writer.commits == 1
    # (and the fixture checks that no writer thread is left)


def test_a_name_expires_through_the_writer(tmp_path: Path) -> None:
    clock = _Clock()
    path = tmp_path / "names.sqlite"
    registry = _registry(path, clock=clock, name_ttl=30 * 86400)
    try:
        assert registry.claim("bob", B) and registry.known("bob")
        clock.now += 31 * 86400
        assert registry.claim("alice", A)  # (the hourly sweep goes out with alice's row)
        assert registry.flush(WAIT)
        assert not registry.known("bob") and registry.claim("bob", A)
    finally:
        registry.close()


def test_in_memory_names_are_written_at_once_without_a_thread() -> None:
    before = threading.active_count()
    registry = NameRegistry()
    try:
        assert threading.active_count() == before
        assert registry.claim("alice", A) and not registry.claim("alice", B)
        assert registry.owner("alice") == A and registry.flush(0.0) and registry.healthy
    finally:
        registry.close()
