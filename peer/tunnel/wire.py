"""What a tunnel stream carries first, and how UDP flows ride the channel's datagrams.

A forwarder opens one stream per TCP connection (or per UDP flow) and writes an
``OpenRequest`` at once, followed by the client's bytes without waiting: a new connection
on an existing tunnel costs one round trip. The exposing peer answers with one
``OpenReply``; on OK the stream then carries the connection's bytes both ways (half-close
is the stream's end, a TCP reset the stream's reset), otherwise it ends::

    request: u16 length | u8 version=1 | u8 kind | u8 protocol | u16 port | u8 n | n bytes
    reply:   u16 length | u8 status | u8 n | n bytes of UTF-8 reason

``kind`` is SERVICE (the bytes name the service, port 0), CONNECT (the SOCKS exit: the
bytes are the host, an IP literal or a DNS name resolved at the exit, and the port) or
LOOKUP (a forward starting: is the service there for me, and is it "tcp" or "udp", the
OK reply's reason; the stream then ends) or LOOKUP_EXIT (a SOCKS server starting: may I
use this peer as an exit) or PUBLISH (to the rendezvous's gateway: open public port
``port`` for my service ``name``; the stream stays open while the port is, and the
gateway then opens a SERVICE stream to the publisher per outside connection).

A UDP flow's datagrams are ``u32 flow | payload`` in a channel datagram, the flow being
the stream's id; one too large for a datagram goes on the flow's stream instead, framed
``u16 length | payload``, so that nothing is silently cut.

Parsing raises ``TunnelDecodeError`` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from peer.errors import RemoteProtocolError
from peer.tunnel.specs import Protocol

VERSION = 1
LENGTH = struct.Struct("!H")
_REQUEST_HEAD = struct.Struct("!BBBHB")
_REPLY_HEAD = struct.Struct("!BB")
FLOW = struct.Struct("!I")
MAX_HEADER = 1 + 1 + 1 + 2 + 1 + 255
MAX_REASON_BYTES = 255
_PROTOCOL_CODES = {Protocol.TCP: 0, Protocol.UDP: 1}
_PROTOCOLS = {code: protocol for protocol, code in _PROTOCOL_CODES.items()}


class TunnelDecodeError(RemoteProtocolError, ValueError):
    """The other side's first bytes on a tunnel stream are not a request or a reply."""


class RequestKind(IntEnum):
    SERVICE = 1  # one of the services the peer exposes, by name
    CONNECT = 2  # the SOCKS exit: any host and port the exit's rules allow
    LOOKUP = 3  # does the service exist for me, and is it TCP or UDP (the reply's reason)
    LOOKUP_EXIT = 4  # may I use this peer as a SOCKS exit (the name is "exit")
    PUBLISH = 5  # to the rendezvous's gateway: open public ``port`` for my service ``name``
    PUBLISH_HTTP = 6  # to the gateway: route HTTP for a host to my service ("SERVICE@HOST")


class OpenStatus(IntEnum):
    """The exposing peer's answer; anything but OK ends the stream."""

    OK = 0
    NOT_ALLOWED = 1  # this peer may not use the service (or the exit)
    UNKNOWN_SERVICE = 2
    CONNECTION_REFUSED = 3  # the target refused the connection
    UNREACHABLE = 4  # no route to the target, or it did not answer in time
    RESOLVE_FAILED = 5  # the exit could not resolve the host name
    FORBIDDEN_TARGET = 6  # the exit refuses that address (loopback, private networks...)
    BAD_REQUEST = 7
    FAILED = 8  # anything else on the exposing side (out of descriptors, ...)
    PORT_TAKEN = 9  # a public port another peer publishes, or the system uses


@dataclass(frozen=True, slots=True)
class OpenRequest:
    kind: RequestKind
    name: str  # the service name, or the host to connect to
    port: int = 0  # CONNECT only
    protocol: Protocol = Protocol.TCP

    def encode(self) -> bytes:
        name = self.name.encode()
        if not 1 <= len(name) <= 255:
            raise ValueError(f"tunnel request name of {len(name)} bytes (1-255)")
        body = (
            _REQUEST_HEAD.pack(
                VERSION, self.kind, _PROTOCOL_CODES[self.protocol], self.port, len(name)
            )
            + name
        )
        return LENGTH.pack(len(body)) + body

    @classmethod
    def parse(cls, body: bytes) -> OpenRequest:
        """From the body that followed the length (``read_length`` gave its size)."""
        if len(body) < _REQUEST_HEAD.size:
            raise TunnelDecodeError("tunnel request too short")
        version, kind, protocol, port, size = _REQUEST_HEAD.unpack_from(body)
        if version != VERSION:
            raise TunnelDecodeError(f"tunnel request version {version}, this peer speaks 1")
        if len(body) != _REQUEST_HEAD.size + size or size == 0:
            raise TunnelDecodeError("tunnel request length does not match its name")
        try:
            request_kind = RequestKind(kind)
            transport = _PROTOCOLS[protocol]
            name = body[_REQUEST_HEAD.size :].decode()
        except (ValueError, KeyError, UnicodeDecodeError):
            raise TunnelDecodeError("malformed tunnel request") from None
        if request_kind in (RequestKind.CONNECT, RequestKind.PUBLISH) and port == 0:
            raise TunnelDecodeError(f"tunnel {request_kind.name} with port 0")
        return cls(request_kind, name, port, transport)


@dataclass(frozen=True, slots=True)
class OpenReply:
    status: OpenStatus
    reason: str = ""

    def encode(self) -> bytes:
        reason = _bounded(self.reason)
        body = _REPLY_HEAD.pack(self.status, len(reason)) + reason
        return LENGTH.pack(len(body)) + body

    @classmethod
    def parse(cls, body: bytes) -> OpenReply:
        if len(body) < _REPLY_HEAD.size:
            raise TunnelDecodeError("tunnel reply too short")
        status, size = _REPLY_HEAD.unpack_from(body)
        if len(body) != _REPLY_HEAD.size + size:
            raise TunnelDecodeError("tunnel reply length does not match its reason")
        try:
            return cls(OpenStatus(status), body[_REPLY_HEAD.size :].decode())
        except (ValueError, UnicodeDecodeError):
            raise TunnelDecodeError("malformed tunnel reply") from None

    @property
    def ok(self) -> bool:
        return self.status is OpenStatus.OK


def read_length(prefix: bytes) -> int:
    """The body size announced by a 2-byte prefix, checked against the largest header."""
    size: int = LENGTH.unpack(prefix)[0]
    if not 0 < size <= MAX_HEADER:
        raise TunnelDecodeError(f"tunnel header of {size} bytes")
    return size


def flow_datagram(flow: int, payload: bytes) -> bytes:
    return FLOW.pack(flow) + payload


def parse_flow_datagram(data: bytes) -> tuple[int, bytes]:
    if len(data) < FLOW.size:
        raise TunnelDecodeError("tunnel datagram shorter than its flow id")
    flow: int = FLOW.unpack_from(data)[0]
    return flow, data[FLOW.size :]


def _bounded(reason: str) -> bytes:
    """At most 255 bytes of UTF-8, cut on a character boundary."""
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return data
    return data[:MAX_REASON_BYTES].decode(errors="ignore").encode()
