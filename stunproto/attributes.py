"""STUN attribute types and their value codecs, kept as one table of data.

Each attribute type maps to a pair of functions that turn the wire value into a Python value
and back. Address attributes that are XORed need the message's magic cookie and transaction
id, so every decoder/encoder takes the 16 bytes that follow the message length (cookie + id,
or the whole RFC 3489 id) as ``xor_key``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from stunproto.errors import StunDecodeError

Address = tuple[str, int]


class AttrType(IntEnum):
    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489, refused by our server (reflection)
    CHANGE_REQUEST = 0x0003  # RFC 3489 and RFC 5780
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026  # RFC 5780
    RESPONSE_PORT = 0x0027  # RFC 5780
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B  # RFC 5780
    OTHER_ADDRESS = 0x802C  # RFC 5780


def is_comprehension_required(attr_type: int) -> bool:
    """Types 0x0000-0x7FFF must be understood by the receiver (RFC 8489 section 14)."""
    return attr_type < 0x8000


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    change_ip: bool = False
    change_port: bool = False


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: int
    reason: str = ""


_FAMILY_V4 = 0x01
_FAMILY_V6 = 0x02


def _decode_address(value: bytes, xor_key: bytes) -> Address:
    if len(value) < 4:
        raise StunDecodeError("address attribute too short")
    family, port = value[1], (value[2] << 8) | value[3]
    if family == _FAMILY_V4:
        if len(value) != 8:
            raise StunDecodeError("IPv4 address attribute must be 8 bytes")
        return socket.inet_ntop(socket.AF_INET, value[4:8]), port
    if family == _FAMILY_V6:
        if len(value) != 20:
            raise StunDecodeError("IPv6 address attribute must be 20 bytes")
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), port
    raise StunDecodeError(f"unknown address family {family}")


def _pack_ip(ip: str) -> tuple[int, bytes]:
    try:
        return _FAMILY_V4, socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return _FAMILY_V6, socket.inet_pton(socket.AF_INET6, ip)


def _encode_address(value: Address, xor_key: bytes) -> bytes:
    family, packed = _pack_ip(value[0])
    return struct.pack("!BBH", 0, family, value[1]) + packed


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, key, strict=False))


def _decode_xor_address(value: bytes, xor_key: bytes) -> Address:
    if len(value) < 4:
        raise StunDecodeError("address attribute too short")
    # The port is XORed with the cookie's top 16 bits, the address with cookie (+ id for v6).
    unxored = value[:2] + _xor(value[2:4], xor_key[:2]) + _xor(value[4:], xor_key)
    return _decode_address(unxored, xor_key)


def _encode_xor_address(value: Address, xor_key: bytes) -> bytes:
    plain = _encode_address(value, xor_key)
    return plain[:2] + _xor(plain[2:4], xor_key[:2]) + _xor(plain[4:], xor_key)


def _decode_text(value: bytes, xor_key: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError("attribute is not valid UTF-8") from exc


def _encode_text(value: str, xor_key: bytes) -> bytes:
    return value.encode("utf-8")


def _raw(value: bytes, xor_key: bytes) -> bytes:
    return bytes(value)


def _uint(size: int) -> tuple[Callable[[bytes, bytes], int], Callable[[int, bytes], bytes]]:
    def decode(value: bytes, xor_key: bytes) -> int:
        if len(value) != size:
            raise StunDecodeError(f"integer attribute must be {size} bytes")
        return int.from_bytes(value, "big")

    def encode(value: int, xor_key: bytes) -> bytes:
        return value.to_bytes(size, "big")

    return decode, encode


def _decode_port(value: bytes, xor_key: bytes) -> int:
    # RESPONSE-PORT and CHANNEL-NUMBER: 16-bit value followed by 16 bits of padding (RFU).
    if len(value) != 4:
        raise StunDecodeError("port attribute must be 4 bytes")
    return (value[0] << 8) | value[1]


def _encode_port(value: int, xor_key: bytes) -> bytes:
    return struct.pack("!HH", value, 0)


def _decode_change_request(value: bytes, xor_key: bytes) -> ChangeRequest:
    if len(value) != 4:
        raise StunDecodeError("CHANGE-REQUEST must be 4 bytes")
    flags = value[3]
    return ChangeRequest(change_ip=bool(flags & 0x04), change_port=bool(flags & 0x02))


def _encode_change_request(value: ChangeRequest, xor_key: bytes) -> bytes:
    return struct.pack("!I", (0x04 if value.change_ip else 0) | (0x02 if value.change_port else 0))


def _decode_error_code(value: bytes, xor_key: bytes) -> ErrorCode:
    if len(value) < 4:
        raise StunDecodeError("ERROR-CODE too short")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunDecodeError("ERROR-CODE out of range")
    return ErrorCode(klass * 100 + number, _decode_text(value[4:], xor_key))


def _encode_error_code(value: ErrorCode, xor_key: bytes) -> bytes:
    return struct.pack("!HBB", 0, value.code // 100, value.code % 100) + value.reason.encode()


def _decode_unknown(value: bytes, xor_key: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunDecodeError("UNKNOWN-ATTRIBUTES length must be even")
    return struct.unpack(f"!{len(value) // 2}H", value)


def _encode_unknown(value: tuple[int, ...], xor_key: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


def _decode_fixed_raw(size: int) -> Callable[[bytes, bytes], bytes]:
    def decode(value: bytes, xor_key: bytes) -> bytes:
        if len(value) != size:
            raise StunDecodeError(f"attribute must be {size} bytes")
        return bytes(value)

    return decode


_u32 = _uint(4)
_u64 = _uint(8)
_u8_padded = (
    lambda value, key: _uint(4)[0](value, key) >> 24,
    lambda value, key: bytes([value, 0, 0, 0]),
)

Decoder = Callable[[bytes, bytes], Any]
Encoder = Callable[[Any, bytes], bytes]


class Codecs(dict[int, tuple[Decoder, Encoder]]):
    """An attribute table: type -> (decode, encode); types absent from it keep raw bytes.

    Tables are read-only and passed explicitly (``StunMessage.parse(data, codecs)``): an
    application protocol extends ``STUN_CODECS`` into a table of its own with
    ``with_codecs``, and nothing global changes when a module is imported. (A dict
    underneath, so lookups stay as fast as a plain dict's; hashable by identity so that a
    frozen message can hold one.)"""

    __hash__ = object.__hash__  # type: ignore[assignment]

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("attribute tables are read-only: extend one with with_codecs()")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only  # type: ignore[assignment]
    __ior__ = _read_only  # type: ignore[assignment]


STUN_CODECS = Codecs(
    {
        AttrType.MAPPED_ADDRESS: (_decode_address, _encode_address),
        AttrType.RESPONSE_ADDRESS: (_decode_address, _encode_address),
        AttrType.CHANGE_REQUEST: (_decode_change_request, _encode_change_request),
        AttrType.SOURCE_ADDRESS: (_decode_address, _encode_address),
        AttrType.CHANGED_ADDRESS: (_decode_address, _encode_address),
        AttrType.USERNAME: (_decode_text, _encode_text),
        AttrType.MESSAGE_INTEGRITY: (_decode_fixed_raw(20), _raw),
        AttrType.ERROR_CODE: (_decode_error_code, _encode_error_code),
        AttrType.UNKNOWN_ATTRIBUTES: (_decode_unknown, _encode_unknown),
        AttrType.CHANNEL_NUMBER: (_decode_port, _encode_port),
        AttrType.LIFETIME: _u32,
        AttrType.XOR_PEER_ADDRESS: (_decode_xor_address, _encode_xor_address),
        AttrType.DATA: (_raw, _raw),
        AttrType.REALM: (_decode_text, _encode_text),
        AttrType.NONCE: (_decode_text, _encode_text),
        AttrType.XOR_RELAYED_ADDRESS: (_decode_xor_address, _encode_xor_address),
        AttrType.REQUESTED_ADDRESS_FAMILY: _u8_padded,
        AttrType.REQUESTED_TRANSPORT: _u8_padded,
        AttrType.DONT_FRAGMENT: (_decode_fixed_raw(0), _raw),
        AttrType.MESSAGE_INTEGRITY_SHA256: (_raw, _raw),
        AttrType.USERHASH: (_decode_fixed_raw(32), _raw),
        AttrType.XOR_MAPPED_ADDRESS: (_decode_xor_address, _encode_xor_address),
        AttrType.RESERVATION_TOKEN: (_decode_fixed_raw(8), _raw),
        AttrType.PRIORITY: _u32,
        AttrType.USE_CANDIDATE: (_decode_fixed_raw(0), _raw),
        AttrType.PADDING: (_raw, _raw),
        AttrType.RESPONSE_PORT: (_decode_port, _encode_port),
        AttrType.SOFTWARE: (_decode_text, _encode_text),
        AttrType.ALTERNATE_SERVER: (_decode_address, _encode_address),
        AttrType.FINGERPRINT: _u32,
        AttrType.ICE_CONTROLLED: _u64,
        AttrType.ICE_CONTROLLING: _u64,
        AttrType.RESPONSE_ORIGIN: (_decode_address, _encode_address),
        AttrType.OTHER_ADDRESS: (_decode_address, _encode_address),
    }
)


def with_codecs(base: Codecs, extra: Mapping[int, tuple[Decoder, Encoder]]) -> Codecs:
    """``base`` plus an application's attributes (e.g. the rendezvous protocol's), as a new
    read-only table. A type that ``base`` already knows is a bug, not an override."""
    clash = sorted(set(base) & set(extra))
    if clash:
        known = ", ".join(f"0x{attr_type:04x}" for attr_type in clash)
        raise ValueError(f"attributes already in the table: {known}")
    return Codecs({**base, **extra})


def decode_value(attr_type: int, value: bytes, xor_key: bytes, codecs: Codecs = STUN_CODECS) -> Any:
    codec = codecs.get(attr_type)
    if codec is None:
        return bytes(value)
    try:
        return codec[0](value, xor_key)
    except StunDecodeError:
        raise
    except (ValueError, struct.error, OSError, IndexError) as exc:
        raise StunDecodeError(f"malformed attribute 0x{attr_type:04x}: {exc}") from exc


def encode_value(attr_type: int, value: Any, xor_key: bytes, codecs: Codecs = STUN_CODECS) -> bytes:
    codec = codecs.get(attr_type)
    if codec is None:
        return bytes(value)
    return codec[1](value, xor_key)


def address_codec(*, xor: bool) -> tuple[Decoder, Encoder]:
    """The (XOR-)MAPPED-ADDRESS value codec, for application attributes carrying addresses."""
    return (_decode_xor_address, _encode_xor_address) if xor else (_decode_address, _encode_address)


def text_codec() -> tuple[Decoder, Encoder]:
    return _decode_text, _encode_text


def raw_codec(size: int | None = None) -> tuple[Decoder, Encoder]:
    """Opaque bytes, of exactly ``size`` bytes when given."""
    return (_raw if size is None else _decode_fixed_raw(size)), _raw


def uint_codec(size: int) -> tuple[Decoder, Encoder]:
    return _uint(size)
