"""The names database: checked at start (a bad --db is one line and exit 1, never a server
that fails every login), and a failure at a login answers 500 without spending the
challenge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peer.events import LoggedIn, LoginFailed
from peer.identity import Identity
from rendezvous.cli import main
from rendezvous.login import VerifiedLogin
from rendezvous.registry import NameRegistry, RegistryError
from rvproto.messages import RvAttr, parse_rv
from tests.rendezvous.test_introductions import ALICE_AT, Wire, events, make_service


def test_names_survive_a_restart_and_the_first_key_keeps_its_name(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    registry = NameRegistry(path)
    assert registry.claim("alice", b"k" * 32)
    registry.close()
    again = NameRegistry(path)
    assert again.claim("alice", b"k" * 32) and not again.claim("alice", b"x" * 32)
    assert again.owner("bob") is None
    again.close()


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda p: p.write_bytes(b"this is not a database" * 100), "not a usable SQLite"),
        (lambda p: p.mkdir(), "cannot be opened"),
    ],
    ids=["garbage", "directory"],
)
def test_an_unusable_database_is_one_line_at_start(
    tmp_path: Path,
    prepare,
    reason: str,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "names.sqlite"
    prepare(path)
    with pytest.raises(RegistryError, match=reason):
        NameRegistry(path)
    assert main(["--listen", "127.0.0.1:0", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rendezvous: --db {path}: ") and reason in err and err.count("\n") == 1


def test_a_locked_database_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    NameRegistry(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryError, match="locked by another process"):
            NameRegistry(path)
    finally:
        holder.close()


class _FailingRegistry(NameRegistry):
    failing = True

    def claim(self, name: str, public_key: bytes) -> bool:
        if self.failing:
            raise RegistryError("names database: disk I/O error")
        return super().claim(name, public_key)


def test_a_database_failure_at_login_is_500_and_the_login_can_be_retried() -> None:
    registry = _FailingRegistry()
    wire = Wire(make_service(registry))
    client = wire.client("alice", Identity.generate(), ALICE_AT)
    client.login(wire.now)
    wire.run()
    failed = [e for e in events(client) if isinstance(e, LoginFailed)]
    assert failed and "cannot record logins" in failed[0].reason
    # The failed login's challenge was not spent: a retry of it would be served...
    sent = [parse_rv(data) for data, at in wire.captured if at == ALICE_AT]
    signed = next(message for message in sent if RvAttr.HANDSHAKE in message)
    checker = wire.service.introductions._logins
    assert isinstance(checker.check(signed, ALICE_AT, 0.0), VerifiedLogin)
    # ... and once the database is back, the client's next login goes through.
    registry.failing = False
    wire.now = 1.0
    client.login(wire.now)
    wire.run()
    assert any(isinstance(e, LoggedIn) for e in events(client))


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_name_nobody_logs_in_under_for_its_ttl_is_free_again(tmp_path: Path) -> None:
    clock = _Clock()
    path = tmp_path / "names.sqlite"
    registry = NameRegistry(path, name_ttl=30 * 86400, clock=clock)
    assert registry.claim("alice", b"a" * 32) and registry.claim("bob", b"b" * 32)
    clock.now += 20 * 86400
    assert registry.claim("alice", b"a" * 32)  # alice logs in: her name is kept
    clock.now += 15 * 86400  # bob: 35 days without a login
    assert registry.claim("alice", b"a" * 32)  # (the hourly sweep, written after alice)
    assert registry.flush()
    assert registry.claim("bob", b"x" * 32)  # (expired in the sweep: a new key)
    assert registry.claim("alice", b"a" * 32) and not registry.claim("alice", b"x" * 32)
    registry.close()
    # And the expiry survives a restart, as the names do.
    clock.now += 40 * 86400
    again = NameRegistry(path, name_ttl=30 * 86400, clock=clock)
    assert again.owner("alice") is None and again.owner("bob") is None
    again.close()


def test_a_database_from_before_names_expired_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "names.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE owners (name TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
        " claimed_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO owners VALUES ('alice', ?, 1000000.0)", (b"a" * 32,))
    old.close()
    clock = _Clock()
    registry = NameRegistry(path, name_ttl=86400, clock=clock)
    assert registry.claim("alice", b"a" * 32) and not registry.claim("alice", b"x" * 32)
    registry.close()
