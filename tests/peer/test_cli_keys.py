"""``peer keys`` and ``peer forget``: the pins, listed with fingerprints, and removed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from peer.cli import main
from peer.identity import Identity, fingerprint
from peer.known_peers import KnownPeers


def test_keys_lists_pins_and_forget_removes_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "known_peers"
    bob, carol = Identity.generate(), Identity.generate()
    server = Identity.generate()  # (any 32 bytes: the rendezvous's key)
    pins = KnownPeers(path)
    pins.pin_server("203.0.113.10:3478", server.x25519_public)
    pins.remember("carol", carol.public_key)  # (an old pin: for every server)
    pins.remember("bob", bob.public_key, server.x25519_public)
    assert main(["keys", "--known-peers", str(path)]) == 0
    at = fingerprint(server.x25519_public)
    server_text = base64.b64encode(server.x25519_public).decode()
    assert capsys.readouterr().out == (
        f"@203.0.113.10:3478 {server_text}\n"
        f"bob {bob.fingerprint} at {at}\ncarol {carol.fingerprint} at every server\n"
    )
    assert main(["forget", "Bob", "--known-peers", str(path), "--json"]) == 0  # (folded)
    assert json.loads(capsys.readouterr().out) == {"event": "forgotten", "name": "bob"}
    assert KnownPeers(path).items() == [("carol", carol.public_key, None)]
    assert main(["forget", "@203.0.113.10:3478", "--known-peers", str(path)]) == 0
    assert capsys.readouterr().out == "forgot @203.0.113.10:3478\n"
    assert main(["keys", "--known-peers", str(path), "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"name": "carol", "fingerprint": carol.fingerprint, "at": "every server"}
    ]
    # Forgetting what is not pinned, or reading a broken file: one line, not a traceback.
    assert main(["forget", "bob", "--known-peers", str(path)]) == 1
    assert capsys.readouterr().err == f"peer: no pin for bob in {path}\n"
    path.write_text("bob not-base64\n")
    assert main(["keys", "--known-peers", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peer: --known-peers ") and err.count("\n") == 1
