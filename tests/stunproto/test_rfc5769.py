"""RFC 5769 test vectors (and RFC 8489 appendix B.1) decode, verify and re-encode."""

from __future__ import annotations

import hashlib

import pytest

from stunproto import AttrType, MessageClass, Method, StunDecodeError, StunMessage, long_term_key

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def _long_term_vector() -> bytes:
    # Written out attribute by attribute (RFC 5769 section 2.4) to keep it readable.
    return bytes.fromhex(
        "00010060"
        "2112a442"
        "78ad3433c6ad72c029da412e"
        "00060012"
        "e3839ee38388e383aae38383e382afe382b9"
        "0000"
        "0015001c"
        + b"f//499k954d6OL34oL9FSTvy64sA".hex()
        + "0014000b"
        + b"example.org".hex()
        + "00"
        "00080014"
        "f67024656dd64a3e02b8e0712e85c9a28ca89666"
    )


def test_sample_request() -> None:
    message = StunMessage.parse(SAMPLE_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class is MessageClass.REQUEST
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert message.get(AttrType.SOFTWARE) == "STUN test client"
    assert message.get(AttrType.PRIORITY) == 0x6E0001FF
    assert message.get(AttrType.ICE_CONTROLLED) == 0x932FF9B151263B36
    assert message.get(AttrType.USERNAME) == "evtj:h6vY"
    assert message.check_integrity(PASSWORD)
    assert not message.check_integrity(b"wrong password")


def test_sample_ipv4_response() -> None:
    message = StunMessage.parse(SAMPLE_IPV4_RESPONSE)
    assert message.message_class is MessageClass.SUCCESS
    assert message.get(AttrType.SOFTWARE) == "test vector"
    assert message.get(AttrType.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert message.check_integrity(PASSWORD)


def test_sample_ipv6_response() -> None:
    message = StunMessage.parse(SAMPLE_IPV6_RESPONSE)
    assert message.get(AttrType.XOR_MAPPED_ADDRESS) == (
        "2001:db8:1234:5678:11:2233:4455:6677",
        32853,
    )
    assert message.check_integrity(PASSWORD)


def test_long_term_authentication_request() -> None:
    message = StunMessage.parse(_long_term_vector())
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.get(AttrType.USERNAME) == username
    assert message.get(AttrType.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert message.get(AttrType.REALM) == "example.org"
    # "TheMatrIX" is the password after SASLprep.
    assert message.check_integrity(long_term_key(username, "example.org", "TheMatrIX"))


@pytest.mark.parametrize(
    ("vector", "software"),
    [(SAMPLE_IPV4_RESPONSE, "test vector"), (SAMPLE_IPV6_RESPONSE, "test vector")],
)
def test_responses_reencode_byte_for_byte(vector: bytes, software: str) -> None:
    message = StunMessage.parse(vector)
    # Padding after SOFTWARE is a space in the vectors; we pad with zero bytes, so compare
    # everything the integrity protects by re-verifying our own encoding instead.
    encoded = message.encode(integrity_key=PASSWORD, fingerprint=True)
    again = StunMessage.parse(encoded)
    assert again.check_integrity(PASSWORD)
    assert again.get(AttrType.SOFTWARE) == software
    assert again.get(AttrType.XOR_MAPPED_ADDRESS) == message.get(AttrType.XOR_MAPPED_ADDRESS)
    assert len(encoded) == len(vector)


def test_sample_request_reencodes_to_the_vector_bytes_except_padding() -> None:
    message = StunMessage.parse(SAMPLE_REQUEST)
    encoded = message.encode(integrity_key=PASSWORD, fingerprint=True)
    # The vector pads USERNAME with spaces (0x20); padding content is arbitrary and covered
    # by the HMAC, so make the vector's padding ours and compare whole datagrams.
    assert len(encoded) == len(SAMPLE_REQUEST)
    assert StunMessage.parse(encoded).check_integrity(PASSWORD)
    vector_zero_padded = SAMPLE_REQUEST.replace(b"h6vY   ", b"h6vY\x00\x00\x00")
    assert encoded[:-32] == vector_zero_padded[:-32]


def test_fingerprint_mismatch_is_a_decode_error() -> None:
    corrupted = SAMPLE_REQUEST[:-1] + bytes([SAMPLE_REQUEST[-1] ^ 1])
    with pytest.raises(StunDecodeError):
        StunMessage.parse(corrupted)


def test_rfc8489_sha256_long_term_vector() -> None:
    vector = bytes.fromhex(
        "00010088"
        "2112a442"
        "78ad3433c6ad72c029da412e"
        "001e0020"
        "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
        "00150029" + b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA".hex() + "000000"
        "0014000b" + b"example.org".hex() + "00"
        "001c0020"
        "fd8c273860d2e18ebca4c89b6973befa7ee8ecc69e9642db326fab65a0b955ba"
    )
    message = StunMessage.parse(vector)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert (
        message.get(AttrType.USERHASH)
        == hashlib.sha256(f"{username}:example.org".encode()).digest()
    )
    # PASSWORD-ALGORITHM is absent, so the key is the MD5 long-term key (RFC 8489 9.2.2).
    assert message.check_integrity(long_term_key(username, "example.org", "TheMatrIX"))
    assert not message.check_integrity(long_term_key(username, "example.org", "TheMatrix"))
