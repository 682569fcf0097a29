"""Reaching the rendezvous, and the other peer, in time (for the asyncio ``Peer``): the
server's name resolved once, up front, so that its answers (whose source is an address)
match; the NAT probed on the punching socket, where a server that answers neither UDP nor
TCP is an error rather than a verdict; and deadlines whose error says what timed out.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from typing import TypeVar

from natprobe.probe import ProbeConfig, probe, route_local_ip
from natprobe.reach import os_reason
from natprobe.report import NatReport
from peer.adapters.punch_socket import PunchSocket
from peer.errors import LocalProtocolError, PeerError, PeerTimeout, ServerUnreachable
from peer.startup import PeerConfig
from stunproto.attributes import Address

T = TypeVar("T")


async def resolve_server(server: Address) -> tuple[Address, str]:
    """``server`` (a host name or an address) as one IPv4 address (the punching socket is
    IPv4), and the local IP the kernel routes toward it. Sends nothing; a PeerError in
    one line ("cannot resolve HOST: ...") when there is no such address."""
    host, port = server
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LocalProtocolError(f"the server's port must be 1 to 65535, not {port!r}")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise PeerError(f"cannot resolve {host}: {os_reason(exc)}") from None
    if not infos:
        raise PeerError(f"cannot resolve {host}: no IPv4 address")
    address = (str(infos[0][4][0]), int(infos[0][4][1]))
    try:
        local_ip = route_local_ip(address)
    except OSError as exc:
        raise PeerError(f"cannot reach {host}:{port}: {os_reason(exc)}") from None
    return address, local_ip


async def probe_nat(
    server: Address, local_ip: str, config: PeerConfig, punch: PunchSocket
) -> NatReport:
    """natprobe on the punching socket (the mapping that matters); ServerUnreachable when
    the server answers neither over UDP nor over TCP (no transport would log in)."""
    report = await probe(
        server,
        config=ProbeConfig(local_ip=local_ip, hairpin=False, lifetime_max=config.probe_lifetime),
        endpoint=punch.stun,
    )
    if report.server_unreachable is not None:
        raise ServerUnreachable(server, report.server_unreachable)
    return report


async def within(timeout: float, awaitable: Awaitable[T], what: str) -> T:
    """``await awaitable``, or PeerTimeout "WHAT (timed out after N s)" once ``timeout``
    seconds have passed."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except PeerTimeout:
        raise  # from inside, with its own reason
    except TimeoutError:
        raise PeerTimeout(f"{what} (timed out after {timeout:g} s)") from None
