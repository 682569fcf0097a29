"""This host's IPv4 addresses: the private endpoints a peer reports at login, so that two
peers on one LAN can reach each other without leaving it."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915  # Linux: the IPv4 address of an interface


def interface_addresses() -> list[str]:
    """Every non-loopback IPv4 address of an up interface (Linux; empty elsewhere)."""
    found: list[str] = []
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in interfaces:
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on it
            address = socket.inet_ntoa(reply[20:24])
            if not ipaddress.ip_address(address).is_loopback and address not in found:
                found.append(address)
    return found


def local_endpoints(port: int, preferred: str | None = None) -> tuple[tuple[str, int], ...]:
    """``(address, port)`` for every local address, the one routed to the server first."""
    addresses = interface_addresses()
    if preferred is not None and not ipaddress.ip_address(preferred).is_unspecified:
        addresses = [preferred, *(a for a in addresses if a != preferred)]
    return tuple((address, port) for address in addresses)
