"""The login handshake's wire pieces (docs/protocol.md, "LOGIN"), shared by server and peer.

A login is Noise IK to the server's static key: the peer's second LOGIN carries message 1
in a HANDSHAKE attribute, and the server's answer carries message 2. The STUN header and
every attribute before HANDSHAKE are the Noise prologue, so that nothing in the request can
be changed on the way without failing the handshake; nothing but FINGERPRINT may follow it.
Message 2's payload carries the login's secrets (:class:`LoginSecrets`: the TURN credentials,
a ticket to resume the next login with, rvproto.resumption), and the session key that
authenticates every later message both ways (MESSAGE-INTEGRITY) is derived from the
handshake, never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from rvproto.messages import RvAttr
from stunproto import AttrType, StunDecodeError, StunMessage
from stunproto.message import HEADER_SIZE

PROLOGUE_DOMAIN = b"holepunch rendezvous login v2\x00"
_SESSION_LABEL = b"holepunch rendezvous session key"
SESSION_KEY_SIZE = 16
MAX_SECRET_TEXT = 512


def login_prologue(raw: bytes) -> bytes:
    """The Noise prologue of the LOGIN in ``raw``: the domain, the message type and
    transaction id, then every attribute up to (not including) HANDSHAKE. Raises
    StunDecodeError if there is no HANDSHAKE, or anything but FINGERPRINT after it."""
    pos = HEADER_SIZE
    while pos + 4 <= len(raw):
        attr_type, length = struct.unpack_from("!HH", raw, pos)
        if attr_type == RvAttr.HANDSHAKE:
            after = pos + 4 + length + (-length & 3)
            if after != len(raw) and not _only_fingerprint(raw, after):
                raise StunDecodeError("attributes after HANDSHAKE")
            return PROLOGUE_DOMAIN + raw[:2] + raw[4:HEADER_SIZE] + raw[HEADER_SIZE:pos]
        pos += 4 + length + (-length & 3)
    raise StunDecodeError("no HANDSHAKE attribute")


def _only_fingerprint(raw: bytes, pos: int) -> bool:
    attr_type, length = struct.unpack_from("!HH", raw, pos)
    return bool(attr_type == AttrType.FINGERPRINT and pos + 4 + length == len(raw))


def prologue_of_unsent(message: StunMessage) -> bytes:
    """The prologue of ``message`` once a HANDSHAKE is appended to it (the client's side)."""
    raw = message.encode()
    return PROLOGUE_DOMAIN + raw[:2] + raw[4:HEADER_SIZE] + raw[HEADER_SIZE:]


def session_key(initiator_key: bytes) -> bytes:
    """The login session's MESSAGE-INTEGRITY key, from the handshake's first transport key
    (the one the initiator would send with, which nothing else uses)."""
    return hmac.new(initiator_key, _SESSION_LABEL, hashlib.sha256).digest()[:SESSION_KEY_SIZE]


@dataclass(frozen=True, slots=True)
class LoginSecrets:
    """The payload of message 2 (or of a resumed login's SEALED): what only the peer may
    learn. The TURN credentials (empty when the server offers no relay), then the ticket
    for the next login and its resumption secret (rvproto.resumption; both empty from a
    server that issues none). Each field is a u16 length and its bytes."""

    turn_username: str = ""
    turn_password: str = ""
    ticket: bytes = b""
    resumption_secret: bytes = field(default=b"", repr=False)

    def encode(self) -> bytes:
        out = bytearray()
        fields = (self.turn_username.encode(), self.turn_password.encode())
        for data in (*fields, self.ticket, self.resumption_secret):
            if len(data) > MAX_SECRET_TEXT:
                raise ValueError(f"login secret of {len(data)} bytes")
            out += len(data).to_bytes(2, "big") + data
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes) -> LoginSecrets:
        fields: list[bytes] = []
        pos = 0
        # (Two fields from a server that issues no tickets, four otherwise.)
        while pos < len(data) and len(fields) < 4:
            if pos + 2 > len(data):
                raise StunDecodeError("login secrets truncated")
            size = int.from_bytes(data[pos : pos + 2], "big")
            if size > MAX_SECRET_TEXT or pos + 2 + size > len(data):
                raise StunDecodeError("login secret too long or truncated")
            fields.append(data[pos + 2 : pos + 2 + size])
            pos += 2 + size
        if pos != len(data) or len(fields) not in (2, 4):
            raise StunDecodeError("login secrets of the wrong shape")
        try:
            username, password = fields[0].decode(), fields[1].decode()
        except UnicodeDecodeError:
            raise StunDecodeError("login secret is not UTF-8") from None
        return cls(username, password, *fields[2:])
