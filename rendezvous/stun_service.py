"""Sans-I/O STUN Binding service: RFC 8489/5389, RFC 3489 compatibility, RFC 5780.

The service answers on up to four local transport addresses: the primary and alternate IP,
each with the primary and alternate port. ``handle`` is told which local address a request
arrived on and returns the response, the local address to send it from (CHANGE-REQUEST picks
another one) and the destination, which is always the request's source IP (RESPONSE-PORT may
change only the port): the service never reflects traffic toward a third party.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from rendezvous.ratelimit import RateLimit, SourceRateLimiter
from stunproto import (
    AttrType,
    ChangeRequest,
    ErrorCode,
    MessageClass,
    Method,
    StunDecodeError,
    StunMessage,
)
from stunproto.attributes import Address, is_comprehension_required
from stunproto.message import MAGIC_COOKIE, encode_attribute

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
_PLAIN_BINDING_HEADER = b"\x00\x01\x00\x00" + _COOKIE
_FINGERPRINT_XOR = 0x5354554E
_FINGERPRINT_TLV = b"\x80\x28\x00\x04"
_U32 = struct.Struct("!I").pack
# Bound on the fast path's per-source cache of encoded address attributes (spoofed floods
# just make it start over).
_FAST_CACHE_MAX = 16384


@dataclass(frozen=True, slots=True, kw_only=True)
class StunServiceConfig:
    primary: Address
    alternate_ip: str | None = None
    alternate_port: int | None = None  # defaults to the primary port + 1 (RFC 3489 habit)
    software: str | None = None  # SOFTWARE in responses; off by default to keep them small
    rate_limit: RateLimit = field(default_factory=RateLimit)

    @property
    def other_port(self) -> int:
        return self.alternate_port if self.alternate_port is not None else self.primary[1] + 1


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes
    local: Address  # send from this local transport address
    destination: Address


# ``StunService.responder(local)``: (data, source, now) -> the answer to a plain Binding request
# as bytes (send them from ``local`` to ``source``), otherwise what ``handle`` (or the
# fallback handler) returns.
Responder = Callable[[bytes, Address, float], "bytes | Reply | None"]
# ``handle``'s signature: (data, source, local, now); the rendezvous service wraps it.
Handler = Callable[[bytes, Address, Address, float], "Reply | None"]


class StunService:
    def __init__(self, config: StunServiceConfig) -> None:
        self.config = config
        self.limiter = SourceRateLimiter(config.rate_limit)
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
        # Per-local-address constant attribute bytes for the fast path.
        self._tails = {local: self._constant_tail(local) for local in self.local_addresses}

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
        if change_ip:
            assert self.config.alternate_ip is not None
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

    def responder(self, local: Address, *, fallback: Handler | None = None) -> Responder:
        """``handle`` for datagrams arriving on ``local``, specialised for the hot path.

        Same answers as ``handle(data, source, local, now)``, except that the response to a
        plain 20-byte Binding request comes back as bare bytes, always to be sent from
        ``local`` to ``source``: no ``Reply`` is built for it, and the encoded address
        attributes of IPv4 sources (which, XORed with the magic cookie only, do not depend on
        the transaction id) are cached per source.
        """
        handle = fallback or self.handle
        allow = self.limiter.allow
        fast_success = self._fast_success
        tail = self._tails[local]
        plain = _PLAIN_BINDING_HEADER
        fp_tlv, fp_xor, u32, crc32 = _FINGERPRINT_TLV, _FINGERPRINT_XOR, _U32, zlib.crc32
        # IPv4 sources: XOR-MAPPED-ADDRESS and MAPPED-ADDRESS are 12 bytes each.
        prefix = b"\x01\x01" + struct.pack("!H", 24 + len(tail) + 8)
        cache: dict[Address, bytes] = {}  # source -> address attributes + constant tail

        def respond(data: bytes, source: Address, now: float) -> bytes | Reply | None:
            if len(data) != 20 or data[:8] != plain:
                return handle(data, source, local, now)
            if not allow(source[0], now):
                return None
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

    def handle(self, data: bytes, source: Address, local: Address, now: float) -> Reply | None:
        if len(data) < 20 or data[0] >= 0x40:
            return None
        if not self.limiter.allow(source[0], now):
            return None
        if len(data) == 20 and data[:8] == _PLAIN_BINDING_HEADER:
            # Fast path: the plain Binding request that nearly every client sends.
            return Reply(self._fast_success(data, source, local), local, source)
        try:
            request = StunMessage.parse(data)
        except StunDecodeError:
            return None
        if request.message_class is not MessageClass.REQUEST:
            return None  # indications and stray responses get no answer
        if request.method != Method.BINDING:
            return self._error(request, local, source, ErrorCode(400, "Bad Request"))
        unknown = tuple(
            kind
            for kind, _ in request.attributes
            if is_comprehension_required(kind) and kind not in _UNDERSTOOD
        )
        if unknown:
            # RESPONSE-ADDRESS lands here too: honouring it would make us a reflector.
            return self._error(request, local, source, ErrorCode(420, "Unknown Attribute"), unknown)
        change: ChangeRequest = request.get(AttrType.CHANGE_REQUEST, ChangeRequest())
        if (change.change_ip or change.change_port) and not self.has_alternate:
            # RFC 5780 section 6.1: a server without an alternate address answers 420.
            return self._error(
                request,
                local,
                source,
                ErrorCode(420, "Unknown Attribute"),
                (AttrType.CHANGE_REQUEST,),
            )
        send_from = (
            self._changed(local, change_ip=change.change_ip, change_port=change.change_port)
            if change.change_ip or change.change_port
            else local
        )
        response_port = request.get(AttrType.RESPONSE_PORT)
        destination = source if response_port is None else (source[0], response_port)
        return Reply(self._success(request, source, local, send_from), send_from, destination)

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
            # RFC 5780 section 7.6: echo the same amount, never more than the request carried.
            attrs.append((AttrType.PADDING, bytes(len(padding))))
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
        fingerprint = (zlib.crc32(message) ^ 0x5354554E) & 0xFFFFFFFF
        return message + b"\x80\x28\x00\x04" + fingerprint.to_bytes(4, "big")

    def _error(
        self,
        request: StunMessage,
        local: Address,
        source: Address,
        error: ErrorCode,
        unknown: tuple[int, ...] = (),
    ) -> Reply:
        if request.legacy:
            # RFC 3489 11.2.9/11.2.10: reason padded with spaces and an even count of unknown
            # attributes, so that every length is a multiple of four.
            error = ErrorCode(error.code, error.reason + " " * (-len(error.reason) % 4))
            if len(unknown) % 2:
                unknown = (*unknown, unknown[-1])
        attrs: list[tuple[int, object]] = [(AttrType.ERROR_CODE, error)]
        if unknown:
            attrs.append((AttrType.UNKNOWN_ATTRIBUTES, unknown))
        reply = request.reply(MessageClass.ERROR, *attrs)
        log.debug("stun_error", code=error.code, source=f"{source[0]}:{source[1]}")
        return Reply(reply.encode(fingerprint=not request.legacy), local, source)
