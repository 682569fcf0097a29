"""The peer's one UDP socket: STUN transactions and peer traffic share it, because the NAT
mapping that punching creates belongs to this socket and to no other.

Like aioice, one reader demultiplexes: datagrams that answer (or are watched by) our STUN
transactions go to the :class:`~iokit.stun_endpoint.StunEndpoint`; everything else goes to
the application's handler. The socket is read through ``iokit.udp_sockets`` (a batch of
datagrams per wake-up, with ``recvmmsg`` where it exists) rather than asyncio's datagram
transport, which costs a callback and a 256 KiB buffer per datagram: at bulk rates that,
not the protocol, would be the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any

from iokit.gso import GsoSender
from iokit.stun_endpoint import StunEndpoint
from iokit.udp_sockets import UdpSockets
from natprobe.reach import os_reason
from peer.errors import PeerError
from stunproto.attributes import Address

DataHandler = Callable[[bytes, Address], None]
_KEY = "punch"
# Socket buffers to ask for: a window of packets in flight at hundreds of MB/s (the kernel
# caps what an unprivileged process gets at net.core.[rw]mem_max; root may force more).
BUFFER_BYTES = 4 * 1024 * 1024
# linux/in.h and linux/in6.h (the socket module names none of them).
_IP_MTU_DISCOVER, _IPV6_MTU_DISCOVER, _PMTUDISC_PROBE = 10, 23, 3


class _SocketTransport(asyncio.DatagramTransport):
    """What StunEndpoint needs of a datagram transport, over the punching socket."""

    def __init__(self, owner: PunchSocket) -> None:
        super().__init__()
        self._owner = owner

    def sendto(self, data: Any, addr: Any = None) -> None:
        self._owner.sendto(bytes(data), addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._owner.local_address if name == "sockname" else default

    def is_closing(self) -> bool:
        return self._owner.closed

    def close(self) -> None:
        self._owner.close()

    def abort(self) -> None:
        self._owner.close()


class PunchSocket:
    """Owns the peer's UDP socket. ``stun`` runs transactions on it (natprobe accepts it as
    ``endpoint=``); ``on_data`` receives every other datagram; ``after_batch`` (optional)
    runs once after each wake-up's datagrams."""

    def __init__(self) -> None:
        self._sockets: UdpSockets[str] = UdpSockets(self._on_datagram, after_batch=self._batched)
        self.on_data: DataHandler | None = None
        self.after_batch: Callable[[], None] | None = None
        self.closed = False
        self._local: Address = ("0.0.0.0", 0)
        self.stun = StunEndpoint(_SocketTransport(self))
        self._gso = GsoSender()

    @classmethod
    async def open(cls, local: Address = ("0.0.0.0", 0)) -> PunchSocket:
        """Bind; a PeerError in one line when it cannot ("cannot bind UDP port 4000:
        address already in use")."""
        punch = cls()
        try:
            punch._local = punch._sockets.open(_KEY, local)
        except (OSError, OverflowError) as exc:
            punch.close()
            where = "" if local[0] in ("0.0.0.0", "::", "") else f" on {local[0]}"
            raise PeerError(f"cannot bind UDP port {local[1]}{where}: {os_reason(exc)}") from None
        punch._grow_buffers()
        punch._never_fragment()
        return punch

    def _never_fragment(self) -> None:
        """DF on every datagram and no fragmenting here (IP_PMTUDISC_PROBE): the
        transport's path MTU probes (peer.transport.pmtu) must be lost when a path cannot
        carry them, not arrive in fragments. Linux only; elsewhere the kernel's default."""
        if not sys.platform.startswith("linux"):
            return
        sock = self._sockets.get_socket(_KEY)
        options = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]  # (also IPv4 on a dual-stack one)
        if sock.family == socket.AF_INET6:
            options.append((socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
        for level, option in options:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, _PMTUDISC_PROBE)

    def _grow_buffers(self) -> None:
        sock = self._sockets.get_socket(_KEY)
        for option, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
            try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE (Linux, root): past the sysctl cap
                sock.setsockopt(socket.SOL_SOCKET, forced, BUFFER_BYTES)
            except OSError:
                # Else as much as the cap allows; or the default: slower, not broken.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)

    def _on_datagram(self, key: str, data: bytes, source: Address, now: float) -> None:
        if self.stun.datagram_received(data, source):
            return
        if self.on_data is not None:
            self.on_data(data, source)

    def _batched(self, key: str) -> None:
        if self.after_batch is not None:
            self.after_batch()

    @property
    def local_address(self) -> Address:
        return self._local

    def sendto(self, data: bytes, destination: Address) -> None:
        # A full buffer or an ICMP error: UDP is lossy, the sender's recovery deals with it.
        self._sockets.sendto(_KEY, data, destination)

    def send_many(self, items: list[tuple[bytes, Address]]) -> None:
        """What one pump produced, in order: each run to one destination goes out in as
        few system calls as UDP GSO allows (iokit.gso; one ``sendto`` each without it).
        A refused or dropped datagram is UDP loss, as with ``sendto``."""
        if self.closed:
            return
        try:
            sock = self._sockets.get_socket(_KEY)
        except KeyError:
            return
        self._gso.send_many(sock, items)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stun.close()
            self._sockets.close_all()
