"""The rendezvous's STUN sockets (UDP, up to four with RFC 5780), read in batches.

Plain Binding requests are answered in the read callback itself (the core's fast path, the
answer sent straight back from the socket it came in on); everything else goes to
``RendezvousCore.receive_datagram``, and what that queued is sent once per read batch
(``flush``).
"""

from __future__ import annotations

from collections.abc import Callable

from iokit.udp_sockets import DatagramHandler, UdpSockets
from rendezvous.core import RendezvousCore
from rendezvous.routes import UdpSocket
from stunproto.attributes import Address


class StunSockets:
    def __init__(self, core: RendezvousCore, flush: Callable[[], None]) -> None:
        self._core = core
        self._flush = flush
        # Keyed by the configured address (a plain tuple hashes faster than the route); each
        # socket gets a reader of its own (_reader).
        self._sockets: UdpSockets[Address] = UdpSockets(after_batch=self._after_batch)
        self._queued = False  # the core has something to send
        self.bound: dict[Address, Address] = {}  # configured address -> bound address

    def open(self) -> None:
        """Bind every STUN socket of the core (OSError if one cannot be bound)."""
        for local in self._core.local_addresses:
            self.bound[local] = self._sockets.open(local, local, on_datagram=self._reader(local))

    def sendto(self, via: UdpSocket, data: bytes, destination: Address) -> None:
        self._sockets.sendto(via.local, data, destination)

    def close(self) -> None:
        self._sockets.close_all()

    def _reader(self, local: Address) -> DatagramHandler[Address]:
        fast = self._core.plain_binding_responder(local)
        receive = self._core.receive_datagram
        via = UdpSocket(local)

        def on_datagram(_: Address, data: bytes, source: Address, now: float) -> bytes | None:
            # The hot path: one call into the core's plain-Binding responder, whose answer
            # UdpSockets sends straight back (b"": rate-limited, nothing to send).
            answer = fast(data, source, now)
            if answer is None:
                receive(data, source, via, now)
                self._queued = True
            return answer

        return on_datagram

    def _after_batch(self, local: Address) -> None:
        if self._queued:
            self._queued = False
            self._flush()
