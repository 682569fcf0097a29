"""Sans-I/O STUN Binding service: RFC 8489/5389, RFC 3489 compatibility, RFC 5780.

The service answers on up to four local transport addresses: the primary and alternate IP,
each with the primary and alternate port. ``answer`` is told which local address a request
arrived on and returns the response, the socket to send it from (CHANGE-REQUEST picks
another one) and the destination, which is always the request's source IP (RESPONSE-PORT may
change only the port): the service never reflects traffic toward a third party.

The per-source rate limit is the caller's (``rendezvous.core``), checked before ``answer``;
``responder`` is the hot path for plain Binding requests and checks it itself.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from rendezvous.answers import error_answer
from rendezvous.ratelimit import RateLimit, SourceRateLimiter
from rendezvous.routes import Transmit, UdpSocket, address_text
from stunproto import AttrType, ChangeRequest, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.attributes import Address, is_comprehension_required
from stunproto.message import MAGIC_COOKIE, encode_attribute

# What an answer's other attributes leave of a 65,507-byte UDP payload, with room to spare.
MAX_ECHOED_PADDING = 65_000

log = structlog.get_logger()

# Attributes a Binding request may carry that we understand (comprehension-required range).
_UNDERSTOOD = frozenset(
    {
        AttrType.CHANGE_REQUEST,
        AttrType.USERNAME,
        AttrType.MESSAGE_INTEGRITY,
        AttrType.MESSAGE_INTEGRITY_SHA256,
        AttrType.PRIORITY,
        AttrType.USE_CANDIDATE,
        AttrType.PADDING,
        AttrType.RESPONSE_PORT,
        AttrType.REALM,
        AttrType.NONCE,
        AttrType.USERHASH,
    }
)

_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
PLAIN_BINDING_HEADER = b"\x00\x01\x00\x00" + _COOKIE
_FINGERPRINT_XOR = 0x5354554E
_FINGERPRINT_TLV = b"\x80\x28\x00\x04"
_U32 = struct.Struct("!I").pack
# Bound on the fast path's per-source cache of encoded address attributes (spoofed floods
# just make it start over).
_FAST_CACHE_MAX = 16384

# ``BindingService.responder(local)``: (data, source, now) -> the answer to a plain Binding
# request (send it from ``local`` to ``source``), b"" when the rate limit dropped it, None
# when the datagram is not a plain Binding request (the caller takes the general path).
PlainBindingResponder = Callable[[bytes, Address, float], "bytes | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StunServiceConfig:
    """The server's STUN sockets and what the Binding answers carry."""

    primary: Address
    alternate_ip: str | None = None
    alternate_port: int | None = None  # defaults to the primary port + 1 (RFC 3489 habit)
    software: str | None = None  # SOFTWARE in responses; off by default to keep them small
    rate_limit: RateLimit = field(default_factory=RateLimit)

    @property
    def other_port(self) -> int:
        return self.alternate_port if self.alternate_port is not None else self.primary[1] + 1


class BindingService:
    def __init__(self, config: StunServiceConfig, limiter: SourceRateLimiter) -> None:
        self.config = config
        self.limiter = limiter
        ip, port = config.primary
        self.has_alternate = config.alternate_ip is not None
        if config.alternate_ip is not None:
            alt_ip, alt_port = config.alternate_ip, config.other_port
            self.local_addresses: tuple[Address, ...] = (
                (ip, port),
                (ip, alt_port),
                (alt_ip, port),
                (alt_ip, alt_port),
            )
        else:
            self.local_addresses = ((ip, port),)
        # Per-local-address constant attribute bytes for the fast path, and the routes.
        self._tails = {local: self._constant_tail(local) for local in self.local_addresses}
        self._vias = {local: UdpSocket(local) for local in self.local_addresses}

    def other_address(self, local: Address) -> Address | None:
        """OTHER-ADDRESS (RFC 5780) and CHANGED-ADDRESS (RFC 3489): the server's alternate
        address, or its primary one for a request that arrived on the alternate address.

        Read literally, RFC 5780 7.4 would answer a request on (alternate IP, primary port)
        with (primary IP, alternate port). coturn answers with the alternate address, and
        clients depend on it: turnutils_natdiscovery sends its test III to the OTHER-ADDRESS
        of the test II response and, given the literal answer, reports an address-dependent
        mapping as address-and-port-dependent. We answer as coturn does.
        """
        if not self.has_alternate:
            return None
        alternate = self.local_addresses[3]
        return self.config.primary if local == alternate else alternate

    def _changed(self, local: Address, *, change_ip: bool, change_port: bool) -> Address:
        ip, port = local
        primary_ip, primary_port = self.config.primary
        if change_ip and self.config.alternate_ip is not None:  # checked by the caller
            ip = self.config.alternate_ip if ip == primary_ip else primary_ip
        if change_port:
            port = self.config.other_port if port == primary_port else primary_port
        return ip, port

    def _constant_tail(self, local: Address) -> bytes:
        attrs: list[tuple[int, object]] = [(AttrType.RESPONSE_ORIGIN, local)]
        other = self.other_address(local)
        if other is not None:
            attrs.append((AttrType.OTHER_ADDRESS, other))
        if self.config.software:
            attrs.append((AttrType.SOFTWARE, self.config.software))
        encoded = StunMessage(
            Method.BINDING, MessageClass.SUCCESS, bytes(12), tuple(attrs)
        ).encode()
        return encoded[20:]

    def responder(self, local: Address) -> PlainBindingResponder:
        """The hot path for plain 20-byte Binding requests arriving on ``local``.

        Same answer bytes as ``answer`` (always sent from ``local`` to ``source``), with the
        rate limit applied, but no Transmit built, and the encoded address attributes of
        IPv4 sources (which, XORed with the magic cookie only, do not depend on the
        transaction id) cached per source.
        """
        allow = self.limiter.allow
        fast_success = self._fast_success
        tail = self._tails[local]
        plain = PLAIN_BINDING_HEADER
        fp_tlv, fp_xor, u32, crc32 = _FINGERPRINT_TLV, _FINGERPRINT_XOR, _U32, zlib.crc32
        # IPv4 sources: XOR-MAPPED-ADDRESS and MAPPED-ADDRESS are 12 bytes each.
        prefix = b"\x01\x01" + struct.pack("!H", 24 + len(tail) + 8)
        cache: dict[Address, bytes] = {}  # source -> address attributes + constant tail

        def respond(data: bytes, source: Address, now: float) -> bytes | None:
            if len(data) != 20 or data[:8] != plain:
                return None
            if not allow(source[0], now):
                return b""
            body = cache.get(source)
            if body is None:
                response = fast_success(data, source, local)
                if len(response) != 20 + 24 + len(tail) + 8:
                    return response  # IPv6: XOR-MAPPED-ADDRESS depends on the transaction id
                if len(cache) >= _FAST_CACHE_MAX:
                    cache.clear()
                cache[source] = response[20:-8]
                return response
            message = prefix + data[4:] + body
            return message + fp_tlv + u32(crc32(message) ^ fp_xor)

        return respond

    def answer(self, data: bytes, source: Address, local: Address, now: float) -> Transmit | None:
        """The answer to a STUN datagram (the rate limit already passed) that arrived on
        ``local``; None for what gets no answer."""
        if len(data) == 20 and data[:8] == PLAIN_BINDING_HEADER:
            # The plain Binding request that nearly every client sends.
            return Transmit(self._fast_success(data, source, local), source, self._vias[local])
        try:
            request = StunMessage.parse(data)
        except StunDecodeError:
            return None
        if request.message_class is not MessageClass.REQUEST:
            return None  # indications and stray responses get no answer
        if request.method != Method.BINDING:
            return self._error(request, local, source, 400, "Bad Request")
        unknown = tuple(
            kind
            for kind, _ in request.attributes
            if is_comprehension_required(kind) and kind not in _UNDERSTOOD
        )
        if unknown:
            # RESPONSE-ADDRESS lands here too: honouring it would make us a reflector.
            return self._error(request, local, source, 420, "Unknown Attribute", unknown)
        change: ChangeRequest = request.get(AttrType.CHANGE_REQUEST, ChangeRequest())
        if (change.change_ip or change.change_port) and not self.has_alternate:
            # RFC 5780 section 6.1: a server without an alternate address answers 420.
            unknown = (AttrType.CHANGE_REQUEST,)
            return self._error(request, local, source, 420, "Unknown Attribute", unknown)
        send_from = (
            self._changed(local, change_ip=change.change_ip, change_port=change.change_port)
            if change.change_ip or change.change_port
            else local
        )
        response_port = request.get(AttrType.RESPONSE_PORT)
        destination = source if response_port is None else (source[0], response_port)
        success = self._success(request, source, local, send_from)
        return Transmit(success, destination, self._vias[send_from])

    def _success(
        self, request: StunMessage, source: Address, local: Address, send_from: Address
    ) -> bytes:
        # OTHER-ADDRESS / CHANGED-ADDRESS describe where a change request to the address the
        # request arrived on would be answered from (RFC 5780 7.4, RFC 3489 11.2.3).
        other = self.other_address(local)
        attrs: list[tuple[int, object]]
        if request.legacy:
            # RFC 3489 clients read MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS.
            attrs = [(AttrType.MAPPED_ADDRESS, source), (AttrType.SOURCE_ADDRESS, send_from)]
            if other is not None:
                attrs.append((AttrType.CHANGED_ADDRESS, other))
        else:
            attrs = [
                (AttrType.XOR_MAPPED_ADDRESS, source),
                (AttrType.MAPPED_ADDRESS, source),
                (AttrType.RESPONSE_ORIGIN, send_from),
            ]
            if other is not None:
                attrs.append((AttrType.OTHER_ADDRESS, other))
        padding = request.get(AttrType.PADDING)
        if padding is not None:
            # RFC 5780 section 7.6: echo the same amount, never more than the request carried,
            # and never so much that the answer outgrows a datagram (or STUN's 16 bits).
            attrs.append((AttrType.PADDING, bytes(min(len(padding), MAX_ECHOED_PADDING))))
        if self.config.software and not request.legacy:
            # RFC 3489 parsers (pystun3, Vovida stun) assume 4-aligned attribute lengths.
            attrs.append((AttrType.SOFTWARE, self.config.software))
        reply = request.reply(MessageClass.SUCCESS, *attrs)
        return reply.encode(fingerprint=not request.legacy)

    def _fast_success(self, data: bytes, source: Address, local: Address) -> bytes:
        key = data[4:20]
        body = (
            encode_attribute(AttrType.XOR_MAPPED_ADDRESS, source, key)
            + encode_attribute(AttrType.MAPPED_ADDRESS, source, key)
            + self._tails[local]
        )
        header = b"\x01\x01" + struct.pack("!H", len(body) + 8) + data[4:20]
        message = header + body
        fingerprint = (zlib.crc32(message) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        return message + _FINGERPRINT_TLV + fingerprint.to_bytes(4, "big")

    def _error(
        self,
        request: StunMessage,
        local: Address,
        source: Address,
        code: int,
        reason: str,
        unknown: tuple[int, ...] = (),
    ) -> Transmit:
        log.debug("stun_error", code=code, source=address_text(source))
        answer = error_answer(request, code, reason, unknown=unknown)
        return Transmit(answer, source, self._vias[local])
