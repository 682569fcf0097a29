"""STUN message framing: parse and encode, integrity and fingerprint.

A message carries a 12-byte transaction id after the magic cookie (RFC 5389/8489) or, for
RFC 3489 clients that predate the cookie, a 16-byte id: the length of ``transaction_id``
tells which, and ``encode()`` writes the same framing back so legacy clients get the answer
they understand.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from stunproto.attributes import STUN_CODECS, AttrType, Codecs, decode_value, encode_value
from stunproto.errors import StunDecodeError, StunEncodeError

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI")
_TLV = struct.Struct("!HH")
HEADER_SIZE = 20


class MessageClass(IntEnum):
    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


def message_type(method: int, message_class: int) -> int:
    """Interleave the 12 method bits and 2 class bits as RFC 8489 figure 3 lays them out."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 1) << 4)
        | ((message_class & 2) << 7)
    )


def method_bits(mtype: int) -> int:
    """The 12 method bits of a message type (the inverse of ``message_type``'s interleave)."""
    return (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)


def split_type(mtype: int) -> tuple[int, MessageClass]:
    return method_bits(mtype), MessageClass(((mtype & 0x0010) >> 4) | ((mtype & 0x0100) >> 7))


def method_of(data: bytes) -> int:
    """The method of a STUN datagram (at least 2 bytes) without parsing it: for
    demultiplexing on a shared socket."""
    return method_bits((data[0] << 8) | data[1])


def new_transaction_id(rng: Any = None) -> bytes:
    """12 random bytes; pass a ``random.Random`` for reproducible tests."""
    if rng is None:
        return os.urandom(12)
    return bytes(rng.getrandbits(8) for _ in range(12))


def long_term_key(username: str, realm: str, password: str, *, sha256: bool = False) -> bytes:
    """The long-term credential key (RFC 8489 section 9.2.2), MD5 unless SHA-256 is chosen."""
    material = f"{username}:{realm}:{password}".encode()
    return hashlib.sha256(material).digest() if sha256 else hashlib.md5(material).digest()


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983): first two bits zero, length fits, 4-aligned."""
    return (
        len(data) >= HEADER_SIZE
        and data[0] < 0x40
        and ((data[2] << 8) | data[3]) + HEADER_SIZE == len(data)
        and not data[3] & 3
    )


def _fingerprint(data: bytes) -> int:
    return (zlib.crc32(data) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF


MAX_LENGTH = 0xFFFF  # STUN's 16-bit message and attribute lengths
# More than any message this toolkit or the RFCs' send (a LOGIN has about a dozen; an
# introduction, or a CreatePermission for many peers, a few dozen): refused undecoded.
MAX_ATTRIBUTES = 128


def _with_length(header: bytes, length: int) -> bytes:
    return header[:2] + length.to_bytes(2, "big") + header[4:]


@dataclass(frozen=True, slots=True)
class StunMessage:
    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[tuple[int, Any], ...] = ()
    # The wire bytes and integrity offsets of a parsed message, needed to check its HMACs.
    raw: bytes = field(default=b"", compare=False, repr=False)
    integrity_offset: int = field(default=-1, compare=False, repr=False)
    integrity_sha256_offset: int = field(default=-1, compare=False, repr=False)
    # The attribute table that decoded this message and encodes it (see stunproto.attributes).
    codecs: Codecs = field(default=STUN_CODECS, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.transaction_id) not in (12, 16):
            raise ValueError("transaction id must be 12 bytes (16 for RFC 3489)")

    @property
    def legacy(self) -> bool:
        """True for an RFC 3489 message (no magic cookie, 16-byte transaction id)."""
        return len(self.transaction_id) == 16

    @property
    def xor_key(self) -> bytes:
        return self.transaction_id if self.legacy else _COOKIE_BYTES + self.transaction_id

    def get(self, attr_type: int, default: Any = None) -> Any:
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return default

    def __contains__(self, attr_type: object) -> bool:
        return any(kind == attr_type for kind, _ in self.attributes)

    # ------------------------------------------------------------------ decoding

    @classmethod
    def parse(cls, data: bytes, codecs: Codecs = STUN_CODECS) -> StunMessage:
        """Decode ``data`` with the attribute table ``codecs``; anything malformed raises
        :class:`StunDecodeError`."""
        size = len(data)
        if size < HEADER_SIZE:
            raise StunDecodeError("shorter than a STUN header")
        mtype, length, cookie = _HEADER.unpack_from(data)
        if mtype & 0xC000:
            raise StunDecodeError("first two bits must be zero")
        if length & 3 or length + HEADER_SIZE != size:
            raise StunDecodeError("length field does not match the datagram")
        transaction_id = bytes(data[8:20]) if cookie == MAGIC_COOKIE else bytes(data[4:20])
        xor_key = bytes(data[4:20])
        method, message_class = split_type(mtype)
        attributes: list[tuple[int, Any]] = []
        integrity = integrity256 = -1
        pos = HEADER_SIZE
        while pos < size:
            if len(attributes) >= MAX_ATTRIBUTES:
                # (16,000 empty attributes in 64 KB once cost 12-21 ms of CPU to decode.)
                raise StunDecodeError(f"more than {MAX_ATTRIBUTES} attributes")
            if pos + 4 > size:
                raise StunDecodeError("truncated attribute header")
            attr_type, attr_len = _TLV.unpack_from(data, pos)
            start = pos + 4
            end = start + attr_len
            next_pos = start + ((attr_len + 3) & ~3)
            if next_pos > size:
                raise StunDecodeError("attribute runs past the end of the message")
            value = data[start:end]
            if attr_type == AttrType.FINGERPRINT:
                if next_pos != size:
                    raise StunDecodeError("FINGERPRINT must be the last attribute")
                fingerprint = decode_value(attr_type, value, xor_key, codecs)
                if fingerprint != _fingerprint(data[:pos]):
                    raise StunDecodeError("FINGERPRINT mismatch")
                attributes.append((attr_type, fingerprint))
            elif integrity >= 0 and attr_type != AttrType.MESSAGE_INTEGRITY_SHA256:
                pass  # RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY are ignored
            elif integrity256 >= 0:
                pass  # likewise after MESSAGE-INTEGRITY-SHA256
            else:
                if attr_type == AttrType.MESSAGE_INTEGRITY:
                    integrity = pos
                elif attr_type == AttrType.MESSAGE_INTEGRITY_SHA256:
                    if not 16 <= attr_len <= 32 or attr_len & 3:
                        raise StunDecodeError("MESSAGE-INTEGRITY-SHA256 has a bad length")
                    integrity256 = pos
                attributes.append((attr_type, decode_value(attr_type, value, xor_key, codecs)))
            pos = next_pos
        return cls(
            method,
            message_class,
            transaction_id,
            tuple(attributes),
            bytes(data),
            integrity,
            integrity256,
            codecs,
        )

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (HMAC-SHA1)."""
        if self.integrity_sha256_offset >= 0:
            pos = self.integrity_sha256_offset
            digest_len = int.from_bytes(self.raw[pos + 2 : pos + 4], "big")
            digest = hmac.new(key, self._signed_prefix(pos, 4 + digest_len), "sha256").digest()
            return hmac.compare_digest(
                digest[:digest_len], self.raw[pos + 4 : pos + 4 + digest_len]
            )
        if self.integrity_offset >= 0:
            pos = self.integrity_offset
            digest = hmac.new(key, self._signed_prefix(pos, 24), "sha1").digest()
            return hmac.compare_digest(digest, self.raw[pos + 4 : pos + 24])
        return False

    def _signed_prefix(self, pos: int, attr_size: int) -> bytes:
        # The length field must count up to and including the integrity attribute itself.
        return (
            _with_length(self.raw[:HEADER_SIZE], pos - HEADER_SIZE + attr_size)
            + self.raw[HEADER_SIZE:pos]
        )

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """Encode the message; integrity attributes and FINGERPRINT are computed here, so any
        such attributes in ``attributes`` are skipped."""
        xor_key = self.xor_key
        parts: list[bytes] = []
        for attr_type, value in self.attributes:
            if attr_type in _COMPUTED:
                continue
            parts.append(_tlv(attr_type, encode_value(attr_type, value, xor_key, self.codecs)))
        body = b"".join(parts)
        cookie_and_id = xor_key
        header = (
            struct.pack("!HH", message_type(self.method, self.message_class), 0) + cookie_and_id
        )
        computed = (
            (24 if integrity_key is not None else 0)
            + (36 if integrity_sha256_key is not None else 0)
            + (8 if fingerprint else 0)
        )
        if len(body) + computed > MAX_LENGTH:
            raise StunEncodeError(
                f"message body of {len(body) + computed} bytes (STUN allows 65535)"
            )
        if integrity_key is not None:
            signed = _with_length(header, len(body) + 24) + body
            body += _tlv(
                AttrType.MESSAGE_INTEGRITY, hmac.new(integrity_key, signed, "sha1").digest()
            )
        if integrity_sha256_key is not None:
            signed = _with_length(header, len(body) + 36) + body
            digest = hmac.new(integrity_sha256_key, signed, "sha256").digest()
            body += _tlv(AttrType.MESSAGE_INTEGRITY_SHA256, digest)
        if fingerprint:
            prefix = _with_length(header, len(body) + 8) + body
            body += _tlv(AttrType.FINGERPRINT, _fingerprint(prefix).to_bytes(4, "big"))
        return _with_length(header, len(body)) + body

    def reply(self, message_class: MessageClass, *attributes: tuple[int, Any]) -> StunMessage:
        """A response to this request: same method and transaction id (and framing), and the
        same attribute table."""
        return StunMessage(
            self.method, message_class, self.transaction_id, attributes, codecs=self.codecs
        )


_COMPUTED = frozenset(
    {AttrType.MESSAGE_INTEGRITY, AttrType.MESSAGE_INTEGRITY_SHA256, AttrType.FINGERPRINT}
)


def _tlv(attr_type: int, value: bytes) -> bytes:
    if len(value) > MAX_LENGTH:
        raise StunEncodeError(f"attribute 0x{attr_type:04x} of {len(value)} bytes (at most 65535)")
    padding = -len(value) & 3
    return _TLV.pack(attr_type, len(value)) + value + b"\x00" * padding


def encode_attribute(attr_type: int, value: Any, xor_key: bytes) -> bytes:
    """One attribute as TLV bytes with padding; ``xor_key`` is the 16 bytes after the
    message length (cookie + transaction id), for servers that splice responses by hand."""
    return _tlv(attr_type, encode_value(attr_type, value, xor_key))
