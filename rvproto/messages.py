"""The rendezvous protocol's messages: STUN-framed methods and attributes (docs/protocol.md).

Both sides import this module (the server in ``rendezvous``, the client in ``peer``); it
imports neither. Its attributes live in a table of their own, ``RV_CODECS``, which every
rendezvous message is parsed and encoded with (``StunMessage.parse(data, RV_CODECS)``,
``rv_message(...)``): importing it changes nothing global.

Framing every message as STUN lets one demultiplexer on one socket serve Binding, the
rendezvous methods and, later, TURN; it also gives transactions, retransmission,
MESSAGE-INTEGRITY and FINGERPRINT for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from stunproto import MessageClass, StunDecodeError, StunMessage
from stunproto.attributes import (
    STUN_CODECS,
    Address,
    address_codec,
    raw_codec,
    text_codec,
    uint_codec,
    with_codecs,
)
from stunproto.message import method_of


class RvMethod(IntEnum):
    LOGIN = 0xC01  # register name, key and endpoints (challenge, then a Noise handshake)
    REFRESH = 0xC02  # keep the registration (and the server's NAT mapping) alive
    CONNECT = 0xC03  # ask to be introduced to another peer
    PEER = 0xC04  # server -> peer: an introduction (the other side of CONNECT)
    REPORT = 0xC05  # peer -> server indication: how a punch ended (for the logs)


class RvAttr(IntEnum):
    # Comprehension-required range: a server that does not speak this protocol says 420.
    PEER_NAME = 0x7F01
    PUBLIC_KEY = 0x7F02  # Ed25519, 32 bytes
    PRIVATE_ENDPOINT = 0x7F03  # repeated; XORed so NAT ALGs cannot rewrite it
    NAT_TYPE = 0x7F04
    CHALLENGE = 0x7F06
    CONNECT_TOKEN = 0x7F07  # fresh per introduction, proves the punch belongs to it
    PUNCH_DELAY = 0x7F08  # milliseconds to wait after receipt before punching
    PUBLIC_ENDPOINT = 0x7F09  # the other peer's observed (public) endpoint
    ROLE = 0x7F0A  # 0: initiator (sends the Noise handshake), 1: responder
    RTT = 0x7F0B  # the peer's measured round trip to the server, microseconds
    OUTCOME = 0x7F0D  # REPORT: "lan", "direct", "failed", ...
    ELAPSED = 0x7F0E  # REPORT: milliseconds from introduction to outcome
    TURN_SERVER = 0x7F10  # LOGIN answer: the relay (its credentials are in the handshake)
    RELAYED_ENDPOINT = 0x7F13  # REFRESH: my relay allocation; introductions: the other's
    SERVER_KEY = 0x7F14  # LOGIN challenge: the server's static X25519 key (Noise IK's <- s)
    HANDSHAKE = 0x7F15  # LOGIN: Noise IK message 1 (request) or 2 (answer)
    TICKET = 0x7F16  # resumed LOGIN: a ticket a full login's message 2 brought (opaque)
    SEALED = 0x7F17  # resumed LOGIN answer: the login's secrets, encrypted


_ADDRESS = address_codec(xor=True)
# STUN's attributes plus the rendezvous protocol's: the table for every rendezvous message.
RV_CODECS = with_codecs(
    STUN_CODECS,
    {
        RvAttr.PEER_NAME: text_codec(),
        RvAttr.PUBLIC_KEY: raw_codec(32),
        RvAttr.PRIVATE_ENDPOINT: _ADDRESS,
        RvAttr.NAT_TYPE: text_codec(),
        RvAttr.CHALLENGE: raw_codec(24),
        RvAttr.CONNECT_TOKEN: raw_codec(16),
        RvAttr.PUNCH_DELAY: uint_codec(4),
        RvAttr.PUBLIC_ENDPOINT: _ADDRESS,
        RvAttr.ROLE: uint_codec(4),
        RvAttr.RTT: uint_codec(4),
        RvAttr.OUTCOME: text_codec(),
        RvAttr.ELAPSED: uint_codec(4),
        RvAttr.TURN_SERVER: _ADDRESS,
        RvAttr.RELAYED_ENDPOINT: _ADDRESS,
        RvAttr.SERVER_KEY: raw_codec(32),
        RvAttr.HANDSHAKE: raw_codec(),
        RvAttr.TICKET: raw_codec(),
        RvAttr.SEALED: raw_codec(),
    },
)


def rv_message(
    method: int,
    message_class: MessageClass,
    transaction_id: bytes,
    attributes: tuple[tuple[int, Any], ...] = (),
) -> StunMessage:
    """A rendezvous message (encoded with ``RV_CODECS``)."""
    return StunMessage(method, message_class, transaction_id, attributes, codecs=RV_CODECS)


def parse_rv(data: bytes) -> StunMessage:
    """Parse a rendezvous message; anything malformed raises StunDecodeError."""
    return StunMessage.parse(data, RV_CODECS)


RV_METHODS = frozenset(int(method) for method in RvMethod)


class Role(IntEnum):
    INITIATOR = 0
    RESPONDER = 1


class ErrorCodes:
    UNAUTHORIZED = 401  # challenge issued, or a failed handshake / integrity
    FORBIDDEN = 403  # the name belongs to another key
    NOT_FOUND = 404  # unknown or offline peer
    STALE = 438  # challenge expired or already used
    TICKET_REFUSED = 430  # a resumed login's ticket is no good: log in with a handshake
    BAD_REQUEST = 400
    SERVER_ERROR = 500  # the server could not record the login (its database failed)
    TRY_LATER = 503  # server full


def is_rv_datagram(data: bytes) -> bool:
    """Is this datagram (on a shared STUN socket) a rendezvous-protocol message?"""
    return len(data) >= 20 and data[0] < 0x40 and method_of(data) in RV_METHODS


def all_values(message: StunMessage, attr_type: int) -> list[object]:
    return [value for kind, value in message.attributes if kind == attr_type]


@dataclass(frozen=True, slots=True)
class Introduction:
    """What the server tells each side of a CONNECT about the other."""

    name: str
    public_key: bytes
    public_endpoint: Address
    private_endpoints: tuple[Address, ...]
    role: Role
    token: bytes
    punch_delay: float  # seconds after receipt
    nat_type: str
    relayed_endpoint: Address | None = None  # the other's relay allocation, if it has one

    def attributes(self) -> tuple[tuple[int, object], ...]:
        return (
            (RvAttr.PEER_NAME, self.name),
            (RvAttr.PUBLIC_KEY, self.public_key),
            (RvAttr.PUBLIC_ENDPOINT, self.public_endpoint),
            *((RvAttr.PRIVATE_ENDPOINT, endpoint) for endpoint in self.private_endpoints),
            (RvAttr.ROLE, int(self.role)),
            (RvAttr.CONNECT_TOKEN, self.token),
            (RvAttr.PUNCH_DELAY, round(self.punch_delay * 1000)),
            (RvAttr.NAT_TYPE, self.nat_type),
            *(
                ((RvAttr.RELAYED_ENDPOINT, self.relayed_endpoint),)
                if self.relayed_endpoint is not None
                else ()
            ),
        )

    @classmethod
    def from_message(cls, message: StunMessage) -> Introduction:
        try:
            return cls(
                name=message.get(RvAttr.PEER_NAME),
                public_key=message.get(RvAttr.PUBLIC_KEY),
                public_endpoint=message.get(RvAttr.PUBLIC_ENDPOINT),
                private_endpoints=tuple(all_values(message, RvAttr.PRIVATE_ENDPOINT)),  # type: ignore[arg-type]
                role=Role(message.get(RvAttr.ROLE)),
                token=message.get(RvAttr.CONNECT_TOKEN),
                punch_delay=message.get(RvAttr.PUNCH_DELAY) / 1000,
                nat_type=message.get(RvAttr.NAT_TYPE, "unknown"),
                relayed_endpoint=message.get(RvAttr.RELAYED_ENDPOINT),
            )
        except (TypeError, ValueError) as exc:
            raise StunDecodeError(f"incomplete introduction: {exc}") from exc

    def __post_init__(self) -> None:
        if None in (self.name, self.public_key, self.public_endpoint, self.token):
            raise StunDecodeError("introduction lacks name, key, endpoint or token")


def is_request(message: StunMessage) -> bool:
    return message.message_class is MessageClass.REQUEST
