"""What bench/fuzz.py's targets share: mutations of valid inputs (bit flips, byte changes,
cuts, insertions; for STUN, repeated, dropped or new attributes, re-sealed with a valid
MESSAGE-INTEGRITY and FINGERPRINT) and the Target every parser or handler is wrapped in."""

from __future__ import annotations

import hmac
import random
import struct
import zlib

from rvproto.messages import RvAttr
from stunproto import AttrType

SERVER = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
REALM, SECRET = "fuzz.example", b"fuzz secret"
_FINGERPRINT_XOR = 0x5354554E


# ---------------------------------------------------------------------- mutations


def stun_attributes(data: bytes) -> list[tuple[int, bytes]]:
    """A STUN message's attributes as raw (type, value), integrity and fingerprint off."""
    out, at = [], 20
    while at + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, at)
        value = data[at + 4 : at + 4 + length]
        at += 4 + length + (-length & 3)
        if kind in (AttrType.MESSAGE_INTEGRITY, AttrType.FINGERPRINT):
            break
        out.append((kind, value))
    return out


def seal_stun(header: bytes, attributes: list[tuple[int, bytes]], key: bytes | None) -> bytes:
    """``header`` (type and transaction id) with ``attributes``, a MESSAGE-INTEGRITY made
    with ``key`` (when given) and a FINGERPRINT: a message that passes both checks."""
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) & 3)
        for kind, value in attributes
    )[:65000]
    if key is not None:
        signed = header[:2] + struct.pack("!H", len(body) + 24) + header[4:20] + body
        body += struct.pack("!HH", AttrType.MESSAGE_INTEGRITY, 20)
        body += hmac.new(key, signed, "sha1").digest()
    prefix = header[:2] + struct.pack("!H", len(body) + 8) + header[4:20] + body
    crc = (zlib.crc32(prefix) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    body += struct.pack("!HHI", AttrType.FINGERPRINT, 4, crc)
    return header[:2] + struct.pack("!H", len(body)) + header[4:20] + body


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not buf or choice < 0.1:
            buf += rng.randbytes(rng.randint(1, 64))
        elif choice < 0.4:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice < 0.6:
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif choice < 0.75:
            del buf[rng.randrange(len(buf)) :]
        elif choice < 0.9:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            start = rng.randrange(len(buf))
            buf[start : start + 2] = struct.pack("!H", rng.choice((0, 1, 0xFFFF, len(buf))))
    return bytes(buf)


def mutate_message(data: bytes, rng: random.Random, key: bytes | None) -> bytes:
    """An attribute-level mutation, re-sealed so integrity and fingerprint still check."""
    attributes = stun_attributes(data)
    choice = rng.random()
    if attributes and choice < 0.3:
        index = rng.randrange(len(attributes))
        kind, value = attributes[index]
        attributes[index] = (kind, mutate_bytes(value, rng) if value else rng.randbytes(4))
    elif attributes and choice < 0.45:
        attributes.append(rng.choice(attributes))
    elif attributes and choice < 0.6:
        del attributes[rng.randrange(len(attributes))]
    elif choice < 0.8:
        kind = rng.choice((*AttrType, *RvAttr, rng.randrange(0x10000)))
        attributes.insert(
            rng.randrange(len(attributes) + 1), (int(kind), rng.randbytes(rng.randint(0, 40)))
        )
    else:
        size = rng.choice((0, 1, 300, 5000, 65000))
        attributes.append((AttrType.PADDING, bytes(size)))
    return seal_stun(data[:20], attributes, key)


# ---------------------------------------------------------------------- targets


class Target:
    """One parser or handler: ``feed(data)`` raises only what it documents."""

    name = ""
    expected: tuple[type[BaseException], ...] = ()
    key: bytes | None = None
    stun = True  # seeds are STUN messages: half the mutations work on their attributes

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seeds: list[bytes] = []
        self.keys: dict[bytes, bytes | None] = {}  # a seed's integrity key, if not self.key

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def failures(self) -> int:
        return 0

    def input(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.1 or not self.seeds:
            return rng.randbytes(rng.choice((rng.randint(0, 40), rng.randint(20, 1500))))
        seed = rng.choice(self.seeds)
        if choice < 0.55 or not self.stun:
            return mutate_bytes(seed, rng)
        return mutate_message(seed, rng, self.keys.get(seed, self.key))
