"""The server side of SOCKS5 (RFC 1928) with username/password (RFC 1929), sans-I/O, for
``peer socks``: a local SOCKS5 server whose connections leave from another peer.

One ``SocksNegotiation`` per client connection, in h11's shape: the adapter feeds it the
client's bytes, writes out ``data_to_send()`` and reads ``next_event()``: ``ConnectRequested``
(connect at the exit, then ``reply``) or ``NegotiationFailed`` (write the answer, close).
Only CONNECT is served. Domain names go on unresolved: the exit resolves them (like curl
``--socks5-hostname``), so that the lookup leaves from where the traffic does. Malformed
input is a ``NegotiationFailed`` with the RFC's answer queued, never an exception; what is
held before the CONNECT is answered is bounded by ``SocksServerConfig.max_buffer``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum, auto
from types import MappingProxyType

from peer.errors import LocalProtocolError, RemoteProtocolError

SOCKS_VERSION = 0x05
USERPASS_VERSION = 0x01  # RFC 1929's subnegotiation has its own version
USERPASS_SUCCESS = b"\x01\x00"
USERPASS_FAILURE = b"\x01\x01"  # any non-zero status fails; the server then closes
MAX_FIELD = 255  # a one-byte length: user names, passwords, domain names
MAX_HOST_NAME = 253  # the longest DNS name in text, without its trailing dot
MAX_MESSAGE = 513  # the longest a client sends: RFC 1929's request, 1 + 1 + 255 + 1 + 255
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")  # "_" too: SRV-style names exist in the wild
_ADDRESS_SIZES: dict[int, int] = {0x01: 4, 0x04: 16}  # ATYP -> ADDR bytes; 0x03 is counted


class SocksDecodeError(RemoteProtocolError, ValueError):
    """SOCKS5 bytes that do not parse (the client-side ``parse_reply``), or too few yet."""


class AuthMethod(IntEnum):
    """The authentication methods a greeting offers (RFC 1928 section 3)."""

    NO_AUTHENTICATION = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(IntEnum):
    """What a request asks for; only CONNECT is served."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(IntEnum):
    """How DST.ADDR and BND.ADDR are written (RFC 1928 section 5)."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


_IP_TYPES = {4: AddressType.IPV4, 6: AddressType.IPV6}  # by ipaddress's version


class ReplyCode(IntEnum):
    """The REP field of a reply (RFC 1928 section 6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class SocksState(Enum):
    """Where a negotiation stands; FAILED means: write out data_to_send(), then close."""

    GREETING = auto()
    AUTH = auto()
    REQUEST = auto()
    WAITING_FOR_EXIT = auto()
    ESTABLISHED = auto()
    FAILED = auto()


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The client asks for a TCP connection to ``host``:``port``. ``host`` is IPv4 or
    (compressed) IPv6 text, or an ASCII domain name (IDNA A-labels) to resolve at the exit;
    ``address_type`` says which (a domain that is an IP literal is reported as the IP)."""

    host: str
    port: int
    address_type: AddressType


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """The client broke the protocol or was refused; ``reason`` is one line for the log.
    The answer is queued in data_to_send() and the state is FAILED. It can also come while
    WAITING_FOR_EXIT (too much early data): the adapter then drops the exit connection."""

    reason: str


SocksEvent = ConnectRequested | NegotiationFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class SocksServerConfig:
    """``credentials``: None serves method 0x00 (no authentication); a mapping of user name
    to password requires RFC 1929 and refuses everything else. ``max_buffer``: what a
    client may send before its CONNECT is answered, early data (a TLS ClientHello, an HTTP
    request) included; more is a protocol error, not memory growth."""

    credentials: Mapping[str, str] | None = None
    max_buffer: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_buffer < MAX_MESSAGE:  # or a valid handshake could be too long
            raise ValueError(f"max_buffer must be at least {MAX_MESSAGE} bytes")
        if self.credentials is not None:
            # {} would refuse everyone (None is "no authentication"), and RFC 1929's fields
            # are 1 to 255 bytes: both are mistakes to report now, not at the first client.
            fields = [field.encode() for pair in self.credentials.items() for field in pair]
            if not fields or not all(1 <= len(field) <= MAX_FIELD for field in fields):
                raise ValueError("credentials: one user or more, each field 1 to 255 bytes")
            # A private copy: the caller's dict changing later must not change who gets in.
            object.__setattr__(self, "credentials", MappingProxyType(dict(self.credentials)))


class SocksNegotiation:
    """The negotiation with one client, from its greeting to the CONNECT's reply."""

    __slots__ = ("_buffer", "_config", "_events", "_out", "_state")

    def __init__(self, config: SocksServerConfig | None = None) -> None:
        self._config = config or SocksServerConfig()
        self._state = SocksState.GREETING
        self._buffer = bytearray()  # unparsed bytes; after the request, the early data
        self._out = bytearray()
        self._events: deque[SocksEvent] = deque()

    @property
    def state(self) -> SocksState:
        return self._state

    @property
    def leftover(self) -> bytes:
        """What the client sent after its request (pipelined early data): forward it to
        the exit once ESTABLISHED, before anything read from the socket later."""
        after = self._state in (SocksState.WAITING_FOR_EXIT, SocksState.ESTABLISHED)
        return bytes(self._buffer) if after else b""

    @property
    def buffered(self) -> int:
        """Bytes held from the client; never above ``max_buffer`` between calls."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client, split anywhere. Ignored once FAILED (the adapter is
        closing); an error once ESTABLISHED, when bytes go to the exit instead."""
        if self._state is SocksState.ESTABLISHED:
            raise LocalProtocolError("the SOCKS negotiation is over: forward bytes to the exit")
        if self._state is SocksState.FAILED or not data:
            return
        self._buffer += data
        self._parse()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> SocksEvent | None:
        return self._events.popleft() if self._events else None

    def reply(self, code: ReplyCode, bound: tuple[str, int] = ("0.0.0.0", 0)) -> None:
        """Answer the CONNECT: SUCCEEDED moves to ESTABLISHED (then forward ``leftover``),
        anything else to FAILED (write out the reply, then close). ``bound`` is the
        address the exit connected from, when known; clients rarely use it."""
        if self._state is not SocksState.WAITING_FOR_EXIT:
            raise LocalProtocolError(f"reply() in state {self._state.name}, not WAITING_FOR_EXIT")
        try:
            address = encode_address(*bound)
        except ValueError as exc:
            raise LocalProtocolError(f"bad bound address {bound!r}: {exc}") from None
        self._out += bytes((SOCKS_VERSION, ReplyCode(code), 0)) + address
        if code == ReplyCode.SUCCEEDED:
            self._state = SocksState.ESTABLISHED
        else:
            self._state = SocksState.FAILED
            self._buffer.clear()

    # -- parsing: each step consumes one whole message, or returns False to wait ----------

    def _parse(self) -> None:
        while self._step():  # several messages may have come in one read
            pass
        if len(self._buffer) > self._config.max_buffer and self._state is not SocksState.FAILED:
            # Only early data after the request can be this long (max_buffer >= any
            # message, and whole messages are consumed): refuse the CONNECT.
            self._refuse(f"over {self._config.max_buffer} bytes before the CONNECT's answer")

    def _step(self) -> bool:
        if not self._buffer:
            return False
        if self._state is SocksState.GREETING:
            return self._greeting()
        if self._state is SocksState.AUTH:
            return self._userpass()
        if self._state is SocksState.REQUEST:
            return self._request()
        return False  # WAITING_FOR_EXIT: what follows is early data, kept as it is

    def _greeting(self) -> bool:
        buf = self._buffer
        if buf[0] != SOCKS_VERSION:
            # No SOCKS5 answer: a SOCKS4 or HTTP client would misread it. Just close.
            return self._fail(f"not a SOCKS5 greeting (version byte {buf[0]:#04x})", b"")
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return False
        end = 2 + buf[1]
        offered = set(buf[2:end])
        del buf[:end]
        auth = self._config.credentials is not None
        wanted = AuthMethod.USERNAME_PASSWORD if auth else AuthMethod.NO_AUTHENTICATION
        if wanted not in offered:
            names = ", ".join(f"{m:#04x}" for m in sorted(offered)) or "none"
            return self._fail(
                f"no acceptable authentication method (offered {names}, need {wanted.name})",
                bytes((SOCKS_VERSION, AuthMethod.NO_ACCEPTABLE)),
            )
        self._out += bytes((SOCKS_VERSION, wanted))
        self._state = SocksState.AUTH if auth else SocksState.REQUEST
        return True

    def _userpass(self) -> bool:
        buf = self._buffer
        if buf[0] != USERPASS_VERSION:
            return self._fail(f"bad RFC 1929 version byte {buf[0]:#04x}", USERPASS_FAILURE)
        if len(buf) < 2 or len(buf) < 3 + buf[1]:
            return False
        ulen = buf[1]
        end = 3 + ulen + buf[2 + ulen]
        if len(buf) < end:
            return False
        user, password = bytes(buf[2 : 2 + ulen]), bytes(buf[3 + ulen : end])
        del buf[:end]
        name = user.decode("utf-8", "replace")
        expected = (self._config.credentials or {}).get(name) if name.encode() == user else None
        # Compared even for an unknown user, so that the time taken says less about who
        # exists (compare_digest's time depends on the lengths only).
        if not hmac.compare_digest(password, (expected or "").encode()) or expected is None:
            what = "unknown user" if expected is None else "wrong password for user"
            return self._fail(f"{what} {name!r}", USERPASS_FAILURE)
        self._out += USERPASS_SUCCESS
        self._state = SocksState.REQUEST
        return True

    def _request(self) -> bool:
        buf = self._buffer
        if buf[0] != SOCKS_VERSION:
            return self._refuse(f"not a SOCKS5 request (version byte {buf[0]:#04x})")
        if len(buf) < 2:
            return False
        if buf[1] != Command.CONNECT:
            name = Command(buf[1]).name if buf[1] in set(Command) else "unknown"
            return self._refuse(
                f"unsupported command {buf[1]:#04x} ({name}): only CONNECT is served",
                ReplyCode.COMMAND_NOT_SUPPORTED,
            )
        # buf[2] is RSV: RFC 1928 says X'00', but nothing depends on it, so any is taken.
        if len(buf) < 5:
            return False
        atyp, span = buf[3], _address_span(buf, 3)
        if span is None:
            return self._refuse(
                f"unknown address type {atyp:#04x}", ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED
            )
        start, end = span
        if start == end:  # only a domain can be empty
            return self._refuse("empty domain name")
        if len(buf) < end + 2:
            return False
        raw, port = bytes(buf[start:end]), int.from_bytes(buf[end : end + 2], "big")
        del buf[: end + 2]
        destination = _destination(atyp, raw)
        if isinstance(destination, str):
            return self._refuse(destination)
        host, address_type = destination
        if port == 0:
            return self._refuse(f"port 0 for {host}")
        self._events.append(ConnectRequested(host, port, address_type))
        self._state = SocksState.WAITING_FOR_EXIT
        return False

    def _refuse(self, reason: str, code: ReplyCode = ReplyCode.GENERAL_FAILURE) -> bool:
        return self._fail(reason, bytes((SOCKS_VERSION, code, 0)) + encode_address("0.0.0.0", 0))

    def _fail(self, reason: str, answer: bytes) -> bool:
        """Queue the answer and stop; False, for the parsing steps to return."""
        self._out += answer
        self._events.append(NegotiationFailed(reason))
        self._state = SocksState.FAILED
        self._buffer.clear()
        return False


def _address_span(data: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """Where the ADDR whose ATYP is ``data[at]`` lies (its port follows), None for an
    unknown type; a domain's needs its length byte, ``data[at + 1]``."""
    if data[at] == AddressType.DOMAIN:
        return at + 2, at + 2 + data[at + 1]
    size = _ADDRESS_SIZES.get(data[at])
    return None if size is None else (at + 1, at + 1 + size)


def _destination(atyp: int, raw: bytes) -> tuple[str, AddressType] | str:
    """DST.ADDR as the host to connect to and its type, or why it is none."""
    if atyp != AddressType.DOMAIN:
        address = ipaddress.ip_address(raw)
        return address.compressed, _IP_TYPES[address.version]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:  # UTF-8, not yet IDNA: A-labels for the exit (IDNA 2003's: ß becomes ss)
            text = raw.decode("utf-8").encode("idna").decode("ascii")
        except UnicodeError:
            return "a domain name that is neither ASCII nor valid IDNA"
    try:
        # An IP literal needs no resolving: reporting it as the IP lets the exit's rules
        # see an address, not a name that happens to look like one.
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            return f"an IPv6 address with a scope: {text[:80]!r}"
        return address.compressed, _IP_TYPES[address.version]
    name = text.removesuffix(".")
    if len(name) > MAX_HOST_NAME:
        return f"domain name too long ({len(name)} characters, at most {MAX_HOST_NAME})"
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return f"not a host name: {text[:80]!r}"
    return text, AddressType.DOMAIN


# -- the client side, for tests and benchmarks: no checks but bytes()'s (a length above
# 255 raises ValueError), so that tests can send empty and odd fields too ----------------


def encode_address(host: str, port: int) -> bytes:
    """ATYP, ADDR and PORT for ``host`` (IPv4 or IPv6 text, else a domain name)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode() if host.isascii() else host.encode("idna")
        head = bytes((AddressType.DOMAIN, len(name))) + name
    else:
        head = bytes((_IP_TYPES[address.version],)) + address.packed
    return head + port.to_bytes(2, "big")


def encode_greeting(methods: Iterable[AuthMethod | int]) -> bytes:
    offered = bytes(methods)
    return bytes((SOCKS_VERSION, len(offered))) + offered


def encode_userpass(user: str, password: str) -> bytes:
    u, p = user.encode(), password.encode()
    return bytes((USERPASS_VERSION, len(u))) + u + bytes((len(p),)) + p


def encode_connect(host: str, port: int) -> bytes:
    return bytes((SOCKS_VERSION, Command.CONNECT, 0)) + encode_address(host, port)


def parse_reply(data: bytes) -> tuple[ReplyCode, tuple[str, int], int]:
    """A CONNECT reply: its code, the bound address, and how many bytes it took."""
    if len(data) < 5 or data[0] != SOCKS_VERSION or data[1] not in set(ReplyCode):
        raise SocksDecodeError(f"not a SOCKS5 reply, or not all of one: {data[:5].hex()}")
    span = _address_span(data, 3)
    if span is None or len(data) < span[1] + 2:
        raise SocksDecodeError(f"bad or incomplete address in a SOCKS5 reply: {data[:40].hex()}")
    raw, end = data[span[0] : span[1]], span[1]
    ip = data[3] != AddressType.DOMAIN
    host = ipaddress.ip_address(raw).compressed if ip else raw.decode("ascii", "replace")
    return ReplyCode(data[1]), (host, int.from_bytes(data[end : end + 2], "big")), end + 2
