"""Non-blocking loopback UDP clients for the iokit.udp_sockets tests, and reading their
answers with a deadline."""

from __future__ import annotations

import asyncio
import socket


def udp_client(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    client.setblocking(False)
    return client


async def answers(client: socket.socket, count: int, timeout: float = 2.0) -> list[bytes]:
    """The next ``count`` datagrams ``client`` receives (TimeoutError after ``timeout``)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        return [(await loop.sock_recvfrom(client, 70000))[0] for _ in range(count)]
