"""Noise IK: published vectors (cacophony, noise-c), round trips, tampering, fuzzing."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from noiseproto import (
    CipherState,
    Initiator,
    NoiseConfig,
    NoiseError,
    Responder,
    SymmetricState,
    TransportKeys,
)
from peer.identity import Identity
from rvproto.keys import ed25519_to_x25519_public

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["vectors"]
    return vectors


CACOPHONY = _load("noise_ik_cacophony.json")
NOISE_C = _load("noise_ik_noise_c.json")
ALL_VECTORS = [("cacophony", v) for v in CACOPHONY] + [("noise-c", v) for v in NOISE_C]


def _key(hexkey: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hexkey))


def _run_vector(vector: dict[str, Any]) -> tuple[Initiator, Responder, TransportKeys, bytes]:
    hash_name = vector["protocol_name"].rsplit("_", 1)[1]
    config = NoiseConfig(hash_name=hash_name)
    assert config.protocol_name == vector["protocol_name"]
    initiator = Initiator(
        _key(vector["init_static"]),
        bytes.fromhex(vector["init_remote_static"]),
        bytes.fromhex(vector["init_prologue"]),
        _key(vector["init_ephemeral"]),
        config=config,
    )
    responder = Responder(
        _key(vector["resp_static"]),
        bytes.fromhex(vector["resp_prologue"]),
        _key(vector["resp_ephemeral"]),
        config=config,
    )
    messages = vector["messages"]
    message1 = initiator.write_message1(bytes.fromhex(messages[0]["payload"]))
    assert message1.hex() == messages[0]["ciphertext"]
    h_after_message1 = initiator._state.symmetric.h
    remote_static, payload = responder.read_message1(message1)
    assert remote_static == _key(vector["init_static"]).public_key().public_bytes_raw()
    assert payload.hex() == messages[0]["payload"]
    message2, responder_keys = responder.write_message2(bytes.fromhex(messages[1]["payload"]))
    assert message2.hex() == messages[1]["ciphertext"]
    payload2, initiator_keys = initiator.read_message2(message2)
    assert payload2.hex() == messages[1]["payload"]
    assert initiator_keys.send == responder_keys.receive
    assert initiator_keys.receive == responder_keys.send
    assert initiator_keys.handshake_hash == responder_keys.handshake_hash
    return initiator, responder, initiator_keys, h_after_message1


@pytest.mark.parametrize(
    ("source", "vector"), ALL_VECTORS, ids=[f"{s}-{v['protocol_name']}" for s, v in ALL_VECTORS]
)
def test_published_vectors(source: str, vector: dict[str, Any]) -> None:
    _, _, keys, h_after_message1 = _run_vector(vector)
    if source == "noise-c":
        assert keys.handshake_hash.hex() == vector["handshake_hash"]
    else:
        # This cacophony copy records h after the first message (see the JSON's note).
        assert h_after_message1.hex() == vector["handshake_hash"]
    # Transport messages: Noise CipherStates from Split(), empty AD, alternating senders.
    # keys are the initiator's view: it sends with keys.send, the responder opens with it.
    send = {True: CipherState(keys.send), False: CipherState(keys.receive)}
    receive = {True: CipherState(keys.send), False: CipherState(keys.receive)}
    for index, message in enumerate(vector["messages"][2:]):
        from_initiator = index % 2 == 0
        ciphertext = send[from_initiator].encrypt_with_ad(b"", bytes.fromhex(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert receive[from_initiator].decrypt_with_ad(b"", ciphertext).hex() == message["payload"]


def test_hkdf_matches_rfc5869_construction() -> None:
    # Noise's HKDF is RFC 5869 with the chaining key as salt and no info; cross-check the
    # first two outputs against a direct HMAC-BLAKE2s computation.
    state = SymmetricState(b"Noise_IK_25519_ChaChaPoly_BLAKE2s", "BLAKE2s")
    ck, ikm = state.ck, b"input key material"
    prk = hmac.new(ck, ikm, hashlib.blake2s).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.blake2s).digest()
    assert state.hkdf(ikm, 2) == (t1, t2)
    # A 33-byte name is longer than HASHLEN, so it is hashed rather than padded.
    assert SymmetricState(b"Noise_IK_25519_ChaChaPoly_BLAKE2s", "BLAKE2s").h == (
        hashlib.blake2s(b"Noise_IK_25519_ChaChaPoly_BLAKE2s").digest()
    )


def _pair(
    prologue: bytes = b"test", *, responder_prologue: bytes | None = None
) -> tuple[X25519PrivateKey, X25519PrivateKey, Initiator, Responder]:
    initiator_static = X25519PrivateKey.generate()
    responder_static = X25519PrivateKey.generate()
    initiator = Initiator(
        initiator_static, responder_static.public_key().public_bytes_raw(), prologue
    )
    responder_pro = prologue if responder_prologue is None else responder_prologue
    responder = Responder(responder_static, responder_pro)
    return initiator_static, responder_static, initiator, responder


def test_round_trip_with_payloads() -> None:
    initiator_static, _, initiator, responder = _pair()
    message1 = initiator.write_message1(b"hello responder")
    assert len(message1) == 96 + len(b"hello responder")
    remote_static, payload = responder.read_message1(message1)
    assert remote_static == initiator_static.public_key().public_bytes_raw()
    assert payload == b"hello responder"
    message2, responder_keys = responder.write_message2(b"hello initiator")
    assert len(message2) == 48 + len(b"hello initiator")
    payload2, initiator_keys = initiator.read_message2(message2)
    assert payload2 == b"hello initiator"
    assert initiator_keys.send == responder_keys.receive != initiator_keys.receive
    assert len(initiator_keys.handshake_hash) == 32
    assert "send" not in repr(initiator_keys)  # keys never reach logs


def test_identity_keys_drive_the_handshake() -> None:
    # The initiator only knows the responder's Ed25519 key (vouched for by the rendezvous).
    alice, bob = Identity.generate(), Identity.generate()
    initiator = Initiator(alice.x25519_private, ed25519_to_x25519_public(bob.public_key), b"p")
    responder = Responder(bob.x25519_private, b"p")
    remote_static, _ = responder.read_message1(initiator.write_message1())
    assert remote_static == ed25519_to_x25519_public(alice.public_key)
    message2, _ = responder.write_message2()
    initiator.read_message2(message2)


def test_responder_sees_unvouched_static_before_answering() -> None:
    _, responder_static, _, _ = _pair()
    mallory = X25519PrivateKey.generate()
    expected = X25519PrivateKey.generate().public_key().public_bytes_raw()
    intruder = Initiator(mallory, responder_static.public_key().public_bytes_raw(), b"test")
    responder = Responder(responder_static, b"test")
    remote_static, _ = responder.read_message1(intruder.write_message1())
    # The caller compares and refuses; nothing has been sent yet.
    assert remote_static == mallory.public_key().public_bytes_raw() != expected


def test_wrong_responder_key_fails_at_responder() -> None:
    impostor_target = X25519PrivateKey.generate().public_key().public_bytes_raw()
    initiator = Initiator(X25519PrivateKey.generate(), impostor_target, b"test")
    responder = Responder(X25519PrivateKey.generate(), b"test")
    with pytest.raises(NoiseError):
        responder.read_message1(initiator.write_message1())


def test_prologue_mismatch_fails() -> None:
    _, _, initiator, responder = _pair(b"intro-1", responder_prologue=b"intro-2")
    with pytest.raises(NoiseError):
        responder.read_message1(initiator.write_message1())


def test_every_flipped_bit_of_message1_is_rejected() -> None:
    _, responder_static, initiator, _ = _pair()
    message1 = initiator.write_message1(b"payload")
    for i in range(len(message1)):
        for bit in (0x01, 0x80):
            tampered = bytearray(message1)
            tampered[i] ^= bit
            with pytest.raises(NoiseError):
                Responder(responder_static, b"test").read_message1(bytes(tampered))


def test_every_flipped_byte_of_message2_is_rejected_and_state_survives() -> None:
    _, _, initiator, responder = _pair()
    responder.read_message1(initiator.write_message1())
    message2, responder_keys = responder.write_message2(b"ok")
    for i in range(len(message2)):
        tampered = bytearray(message2)
        tampered[i] ^= 0xFF
        with pytest.raises(NoiseError):
            initiator.read_message2(bytes(tampered))
    with pytest.raises(NoiseError):
        initiator.read_message2(message2[:-1])
    with pytest.raises(NoiseError):
        initiator.read_message2(message2 + b"x")
    # Forgeries did not disturb the handshake: the genuine message still completes it.
    payload, keys = initiator.read_message2(message2)
    assert payload == b"ok"
    assert keys.send == responder_keys.receive


def test_out_of_turn_calls_raise_noise_error() -> None:
    _, _, initiator, responder = _pair()
    with pytest.raises(NoiseError):
        initiator.read_message2(bytes(48))
    with pytest.raises(NoiseError):
        responder.write_message2()
    message1 = initiator.write_message1()
    with pytest.raises(NoiseError):
        initiator.write_message1()
    responder.read_message1(message1)
    with pytest.raises(NoiseError):
        responder.read_message1(message1)


def test_low_order_ephemeral_is_rejected() -> None:
    _, responder_static, _, _ = _pair()
    with pytest.raises(NoiseError):
        Responder(responder_static, b"test").read_message1(bytes(32) + bytes(64))


def test_oversized_payload_is_refused_without_damage() -> None:
    _, _, initiator, responder = _pair()
    with pytest.raises(NoiseError):
        initiator.write_message1(bytes(65535))
    responder.read_message1(initiator.write_message1(b"fits"))


def test_bad_config_and_remote_key() -> None:
    with pytest.raises(NoiseError):
        NoiseConfig(hash_name="MD5")
    with pytest.raises(NoiseError):
        Initiator(X25519PrivateKey.generate(), b"short", b"")


_STATICS = [X25519PrivateKey.generate() for _ in range(2)]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_read_message1_raises_only_noise_error(data: bytes) -> None:
    with contextlib.suppress(NoiseError):
        Responder(_STATICS[1], b"fuzz").read_message1(data)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=95), st.integers(1, 255))
def test_fuzz_mutated_message1(payload: bytes, index: int, xor: int) -> None:
    initiator = Initiator(_STATICS[0], _STATICS[1].public_key().public_bytes_raw(), b"fuzz")
    message1 = bytearray(initiator.write_message1(payload))
    message1[index] ^= xor
    with pytest.raises(NoiseError):
        Responder(_STATICS[1], b"fuzz").read_message1(bytes(message1))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_read_message2_raises_only_noise_error(data: bytes) -> None:
    initiator = Initiator(_STATICS[0], _STATICS[1].public_key().public_bytes_raw(), b"fuzz")
    initiator.write_message1()
    with contextlib.suppress(NoiseError):
        initiator.read_message2(data)


@settings(max_examples=200)
@given(key=st.binary(max_size=64), data=st.binary(max_size=300))
def test_the_fast_blake2s_hmac_is_hmac(key: bytes, data: bytes) -> None:
    from noiseproto.symmetric import _hmac_blake2s

    assert _hmac_blake2s(key, data) == hmac.new(key, data, hashlib.blake2s).digest()
