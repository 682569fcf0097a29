"""Known-peers pinning: NEW / MATCH / CHANGED, file format, permissions."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from peer.identity import fingerprint
from peer.known_peers import KeyChanged, KnownPeers, KnownPeersError, Verdict

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, mode)


def test_new_match_changed(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    known = KnownPeers(path)
    assert known.check("alice", KEY_A) is Verdict.NEW
    known.remember("alice", KEY_A)
    assert known.check("alice", KEY_A) is Verdict.MATCH
    assert known.check("alice", KEY_B) is Verdict.CHANGED
    assert known.check("bob", KEY_A) is Verdict.NEW
    # Persisted: a fresh instance sees the same pins.
    reloaded = KnownPeers(path)
    assert reloaded.check("alice", KEY_A) is Verdict.MATCH
    assert reloaded.check("alice", KEY_B) is Verdict.CHANGED
    assert reloaded.pinned("alice") == KEY_A
    assert "alice" in reloaded and "bob" not in reloaded


def test_file_format_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "known_peers"
    known = KnownPeers(path)
    known.remember("alice", KEY_A)
    known.remember("bob", KEY_B)
    known.remember("alice", KEY_A)  # idempotent
    assert path.read_text() == (
        f"alice {base64.b64encode(KEY_A).decode()}\nbob {base64.b64encode(KEY_B).decode()}\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_changed_key_is_refused_loudly(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / "known_peers")
    assert known.pin("alice", KEY_A) is Verdict.NEW
    assert known.pin("alice", KEY_A) is Verdict.MATCH
    with pytest.raises(KeyChanged) as excinfo:
        known.pin("alice", KEY_B)
    message = str(excinfo.value)
    assert fingerprint(KEY_A) in message and fingerprint(KEY_B) in message
    assert "alice" in message
    assert excinfo.value.old == KEY_A and excinfo.value.new == KEY_B
    with pytest.raises(KeyChanged):
        known.require("alice", KEY_B)
    with pytest.raises(KeyChanged):
        known.remember("alice", KEY_B)  # never overwrites a pin
    assert KnownPeers(tmp_path / "known_peers").pinned("alice") == KEY_A
    # Direct construction, as a caller holding both keys would do.
    assert fingerprint(KEY_B) in str(KeyChanged("alice", KEY_A, KEY_B))


def test_comments_and_blank_lines_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    encoded = base64.b64encode(KEY_A).decode()
    _write(path, f"# pins\n\n   \n  alice\t{encoded}  \n# bob {encoded}\nalice {encoded}\n")
    known = KnownPeers(path)
    assert known.check("alice", KEY_A) is Verdict.MATCH
    assert known.check("bob", KEY_A) is Verdict.NEW


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("alice\n", 1),
        ("# ok\nalice AAAA\n", 2),
        ("\n\nalice !!notbase64!!\n", 3),
        (f"alice {base64.b64encode(KEY_A).decode()} extra\n", 1),
        (f"alice {base64.b64encode(KEY_A[:31]).decode()}\n", 1),
        (f"a {base64.b64encode(KEY_A).decode()}\na {base64.b64encode(KEY_B).decode()}\n", 2),
    ],
)
def test_malformed_lines_report_line_number(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "known_peers"
    _write(path, text)
    with pytest.raises(KnownPeersError, match=rf"known_peers:{line}:"):
        KnownPeers(path)


def test_non_utf8_file_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"\xff\xfe alice")
    os.close(fd)
    with pytest.raises(KnownPeersError):
        KnownPeers(path)


def test_world_writable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    _write(path, "", mode=0o666)
    with pytest.raises(KnownPeersError, match="chmod 600"):
        KnownPeers(path)
    os.chmod(path, 0o644)  # readable is fine: these are public keys
    KnownPeers(path)


def test_bad_names_and_keys_rejected(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / "known_peers")
    for name in ("", "two words", "#comment", "tab\tname"):
        with pytest.raises(KnownPeersError):
            known.remember(name, KEY_A)
    with pytest.raises(KnownPeersError):
        known.remember("alice", KEY_A[:16])


def test_append_after_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    _write(path, f"alice {base64.b64encode(KEY_A).decode()}")
    KnownPeers(path).remember("bob", KEY_B)
    reloaded = KnownPeers(path)
    assert reloaded.check("alice", KEY_A) is Verdict.MATCH
    assert reloaded.check("bob", KEY_B) is Verdict.MATCH


def test_forget_removes_only_that_peer(tmp_path: Path) -> None:
    path = tmp_path / "known_peers"
    encoded_a = base64.b64encode(KEY_A).decode()
    _write(path, f"# keep me\nalice {encoded_a}\nbob {base64.b64encode(KEY_B).decode()}\n")
    known = KnownPeers(path)
    assert known.forget("alice")
    assert not known.forget("alice")
    assert known.check("alice", KEY_B) is Verdict.NEW
    text = path.read_text()
    assert "# keep me" in text and "bob" in text and "alice" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    known.remember("alice", KEY_B)
    assert KnownPeers(path).pinned("alice") == KEY_B
