"""What the tunnel commands are told, parsed once into values: a service a peer exposes
(``ssh=127.0.0.1:22``, ``dns=10.0.0.53:53/udp``), where a forward listens (``8022``,
``127.0.0.1:8022``, ``[::1]:8022``) and what it reaches (``bob:ssh``).

Every problem is a ``TunnelSpecError`` whose message is one line naming the bad text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

from rvproto.names import InvalidName, canonical_name

MAX_SERVICE_NAME = 32
# A service name is a short word: it travels on every stream's first bytes and in logs.
_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$"
)


class TunnelSpecError(ValueError):
    """A service, listen address or target that cannot be used (one line, says which)."""


class Protocol(Enum):
    """What a service speaks: TCP connections become streams; UDP flows ride datagrams."""

    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """``NAME=HOST:PORT[/udp]``: a service the exposing peer reaches on its own network."""

    name: str
    host: str
    port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        suffix = "/udp" if self.protocol is Protocol.UDP else ""
        return f"{self.name}={join_host_port(self.host, self.port)}{suffix}"


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """``[IP:]PORT``: where a forward (or a SOCKS server) listens; loopback by default, so
    that a forward is not opened to the whole LAN by accident."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """``PEER:SERVICE``: the peer to reach and the name of one service it exposes."""

    peer: str
    service: str


def service_name(text: str) -> str:
    name = text.strip().lower()
    if not _SERVICE_NAME.match(name):
        raise TunnelSpecError(
            f"bad service name {text!r}: 1-{MAX_SERVICE_NAME} of a-z, 0-9, '.', '_', '-'"
        )
    return name


def parse_service(text: str) -> ServiceSpec:
    """``NAME=HOST:PORT[/udp]`` (``/tcp`` is the default and may be written)."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise TunnelSpecError(f"bad service {text!r}: expected NAME=HOST:PORT[/udp]")
    protocol = Protocol.TCP
    base, slash, suffix = rest.rpartition("/")
    if slash:
        try:
            protocol = Protocol(suffix.lower())
        except ValueError:
            raise TunnelSpecError(f"bad service {text!r}: /tcp or /udp, not /{suffix}") from None
        rest = base
    host, port = split_host_port(rest, what=f"service {text!r}")
    return ServiceSpec(service_name(name), host, port, protocol)


def parse_listen(text: str) -> ListenSpec:
    """``PORT`` (on 127.0.0.1), ``IP:PORT`` or ``[IPv6]:PORT``; the IP must be literal.
    Port 0 picks a free port (the forward's ``address`` tells which)."""
    what = f"listen address {text!r}"
    if text.isdigit():
        return ListenSpec("127.0.0.1", port_number(text, what=what, zero=True))
    host, port = split_host_port(text, what=what, zero=True)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise TunnelSpecError(f"bad listen address {text!r}: the host must be an IP") from None
    return ListenSpec(host, port)


def parse_target(text: str) -> TargetSpec:
    peer, sep, service = text.rpartition(":")
    if not sep or not peer:
        raise TunnelSpecError(f"bad target {text!r}: expected PEER:SERVICE")
    try:
        name = canonical_name(peer)
    except InvalidName as exc:
        raise TunnelSpecError(f"bad target {text!r}: {exc}") from None
    return TargetSpec(name, service_name(service))


def split_host_port(text: str, *, what: str, zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; the host is an IP literal or a DNS name."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise TunnelSpecError(f"bad {what}: expected [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TunnelSpecError(f"bad {what}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise TunnelSpecError(f"bad {what}: expected HOST:PORT")
        if ":" in host:
            raise TunnelSpecError(f"bad {what}: write an IPv6 address as [ADDRESS]:PORT")
        if not is_ip(host) and not _HOST_NAME.match(host):
            raise TunnelSpecError(f"bad {what}: {host!r} is not a host name or an IP")
    return host, port_number(port, what=what, zero=zero)


def port_number(text: str, *, what: str, zero: bool = False) -> int:
    low = 0 if zero else 1
    if not text.isdigit() or not low <= int(text) <= 65535:
        raise TunnelSpecError(f"bad {what}: the port must be {low}-65535, not {text!r}")
    return int(text)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_users(text: str, *, source: str) -> dict[str, str]:
    """A SOCKS users file: ``USER:PASSWORD`` per line (``#`` comments, blank lines
    skipped); each field 1-255 bytes, as RFC 1929 carries them."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not 1 <= len(user.encode()) <= 255 or not 1 <= len(password.encode()) <= 255:
            raise TunnelSpecError(f"{source}:{number}: expected USER:PASSWORD (1-255 bytes each)")
        if user in users:
            raise TunnelSpecError(f"{source}:{number}: user {user!r} given twice")
        users[user] = password
    if not users:
        raise TunnelSpecError(f"{source}: no USER:PASSWORD line")
    return users
