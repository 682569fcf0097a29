"""The login's secrets payload (rvproto.login.LoginSecrets) and the resumed login's keys
(rvproto.resumption): what both sides must read alike."""

from __future__ import annotations

import pytest

from rvproto.login import LoginSecrets
from rvproto.resumption import ResumedKeys, seal, unseal
from stunproto import StunDecodeError


def test_secrets_round_trip_with_and_without_a_ticket() -> None:
    full = LoginSecrets("1700000000:alice", "pw", b"ticket bytes", bytes(range(32)))
    assert LoginSecrets.parse(full.encode()) == full
    # A server that issues no tickets sends the two TURN fields alone.
    bare = LoginSecrets("u", "p").encode()[:6]
    assert LoginSecrets.parse(bare) == LoginSecrets("u", "p")
    assert "resumption_secret" not in repr(full)  # (never in a log line)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01u", LoginSecrets("u", "p", b"t", b"s").encode()[:-1], b"\x00\x00" * 3],
)
def test_malformed_secrets_are_refused(data: bytes) -> None:
    with pytest.raises(StunDecodeError):
        LoginSecrets.parse(data)


def test_resumed_keys_differ_per_challenge_and_transaction_and_purpose() -> None:
    secret = bytes(32)
    base = ResumedKeys.derive(secret, bytes(24), bytes(12))
    assert len({base.binder, base.session_key}) == 2 and len(base.payload_key) == 32
    assert base.payload_key[:16] not in (base.binder, base.session_key)
    assert ResumedKeys.derive(secret, bytes(23) + b"\x01", bytes(12)) != base
    assert ResumedKeys.derive(secret, bytes(24), bytes(11) + b"\x01") != base
    assert ResumedKeys.derive(bytes(31) + b"\x01", bytes(24), bytes(12)) != base
    assert repr(base) == "ResumedKeys()"  # (no key in a log line)


def test_a_sealed_payload_opens_only_under_its_key() -> None:
    sealed = seal(bytes(32), b"turn credentials")
    assert b"turn credentials" not in sealed
    assert unseal(bytes(32), sealed) == b"turn credentials"
    with pytest.raises(StunDecodeError):
        unseal(bytes(31) + b"\x01", sealed)
