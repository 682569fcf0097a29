"""TURN relay sockets, bound and closed when the sans-I/O side asks; and ``TurnRelay``, a
standalone TURN relay (tests, or a relay host of its own).

Relay sockets are plain non-blocking sockets (``iokit.udp_sockets``): they must be usable at
once, in the same callback that handled the Allocate (a Send indication may follow right
behind it), which ``create_datagram_endpoint`` (a coroutine) cannot promise. Each one is
reported back: ``relay_opened`` releases the held Allocate success answer, ``relay_failed``
(EMFILE, a port taken) turns it into 508, so a client is never told "Allocated" with no
socket behind it; both queue the answer, sent by the same flush. ::

    async with TurnRelay(config, listen=("0.0.0.0", 3478)) as relay:
        ...
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from iokit.lifecycle import AsyncLifecycle
from iokit.loop_timer import LoopTimer
from iokit.udp_sockets import UdpSockets
from rendezvous.errors import LocalProtocolError
from rendezvous.routes import RelaySocket, Transmit, UdpSocket, address_text
from rendezvous.turn_config import TurnConfig
from rendezvous.turn_server import TurnServer
from stunproto.attributes import Address

log = structlog.get_logger()


class RelayOwner(Protocol):
    """What decides about relay sockets: a ``RendezvousCore`` or a bare ``TurnServer``."""

    def relays_to_open(self) -> list[Address]: ...
    def relays_to_close(self) -> list[Address]: ...
    def relay_opened(self, relay: Address, now: float) -> None: ...
    def relay_failed(self, relay: Address, now: float) -> None: ...


class RelaySockets:
    """The relay sockets: ``on_datagram(relay, data, peer, now)`` for each datagram a peer
    sends to one, ``after_batch()`` after each read batch."""

    def __init__(
        self,
        on_datagram: Callable[[Address, bytes, Address, float], None],
        after_batch: Callable[[], None],
    ) -> None:
        self._sockets: UdpSockets[Address] = UdpSockets(
            on_datagram, after_batch=lambda _relay: after_batch()
        )

    def sync(self, owner: RelayOwner, now: float) -> None:
        """Close and open what ``owner`` asks for (close first: a port it freed may be
        handed out again); each relay is reported back, bound or not."""
        for relay in owner.relays_to_close():
            self._sockets.close(relay)
        for relay in owner.relays_to_open():
            try:
                self._sockets.open(relay, relay)
            except OSError as exc:
                log.warning("turn_relay_bind_failed", relay=address_text(relay), error=str(exc))
                owner.relay_failed(relay, now)
            else:
                owner.relay_opened(relay, now)

    def sendto(self, relay: Address, data: bytes, destination: Address) -> None:
        self._sockets.sendto(relay, data, destination)

    def close(self) -> None:
        self._sockets.close_all()


class TurnRelay(AsyncLifecycle):
    """A :class:`TurnServer` alone on a client-facing UDP socket of its own, with its relay
    sockets and timer (the TURN port answers Binding requests too, as coturn's does)."""

    def __init__(
        self,
        config: TurnConfig,
        *,
        listen: Address,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.server = TurnServer(config, random_bytes=random_bytes)
        self._listen = listen
        self._client: UdpSockets[UdpSocket] = UdpSockets(
            self._client_datagram, after_batch=lambda _via: self._flush()
        )
        self._relays = RelaySockets(self._relayed, self._flush)
        self._timer = LoopTimer(self._on_timer)
        self._out: list[Transmit] = []
        self._wall_offset = 0.0
        self.local_address: Address | None = None  # the bound listen address

    def _client_datagram(self, via: UdpSocket, data: bytes, source: Address, now: float) -> None:
        self._out += self.server.handle(data, source, via, now, now + self._wall_offset)

    def _relayed(self, relay: Address, data: bytes, peer: Address, now: float) -> None:
        self._out += self.server.handle_relayed(relay, data, peer, now)

    # The RelayOwner side: the server's answers to held Allocates join what to send.
    def relays_to_open(self) -> list[Address]:
        return self.server.relays_to_open()

    def relays_to_close(self) -> list[Address]:
        return self.server.relays_to_close()

    def relay_opened(self, relay: Address, now: float) -> None:
        self._out += self.server.relay_opened(relay, now)

    def relay_failed(self, relay: Address, now: float) -> None:
        self._out += self.server.relay_failed(relay, now)

    def _flush(self) -> None:
        if self.server.relays_pending:
            self._relays.sync(self, asyncio.get_running_loop().time())
        out, self._out = self._out, []
        for transmit in out:
            via = transmit.via
            if isinstance(via, RelaySocket):
                self._relays.sendto(via.relay, transmit.data, transmit.destination)
            elif isinstance(via, UdpSocket):
                self._client.sendto(via, transmit.data, transmit.destination)
        self._timer.arm(self.server.get_timer())

    def _on_timer(self) -> None:
        self.server.handle_timer(asyncio.get_running_loop().time())
        self._flush()

    async def start(self) -> None:
        if self.local_address is not None:
            raise LocalProtocolError("TurnRelay started twice")
        # TURN REST usernames carry a unix expiry; the server reads the loop's clock.
        self._wall_offset = time.time() - asyncio.get_running_loop().time()
        self.local_address = self._client.open(UdpSocket(self._listen), self._listen)
        log.info("turn_listening", address=address_text(self.local_address))

    def close(self) -> None:
        self._timer.cancel()
        self._relays.close()
        self._client.close_all()
