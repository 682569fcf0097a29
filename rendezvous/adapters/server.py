"""``RendezvousServer``: the rendezvous core on its sockets, as an ``async with`` block.

The core decides everything; this adapter binds the STUN sockets (``udp``), the TCP
listener (``tcp``) and the relay sockets (``relay_sockets``), sends what the core queues
by the route it names, and keeps one timer at the core's ``get_timer()``.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from iokit.lifecycle import AsyncLifecycle
from iokit.loop_timer import LoopTimer
from rendezvous.adapters.relay_sockets import RelaySockets
from rendezvous.adapters.tcp import TcpConfig, TcpListener
from rendezvous.adapters.udp import StunSockets
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.errors import LocalProtocolError
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import RelaySocket, UdpSocket
from rendezvous.turn_config import TurnConfig
from stunproto.attributes import Address

log = structlog.get_logger()


class RendezvousServer(AsyncLifecycle):
    """``async with RendezvousServer(config) as server:`` serves until the block exits.

    A bare ``StunServiceConfig`` serves with default rendezvous settings and an in-memory
    name registry. The primary address also listens on TCP (``rendezvous.adapters.tcp``)
    for networks that block UDP; ``tcp=None`` turns that off."""

    def __init__(
        self,
        config: RendezvousConfig | StunServiceConfig,
        registry: NameRegistry | None = None,
        *,
        turn: TurnConfig | None = None,
        tcp: TcpConfig | None = TcpConfig(),  # noqa: B008 (frozen, so sharing it is safe)
    ) -> None:
        if isinstance(config, StunServiceConfig):
            config = RendezvousConfig(stun=config)
        self._config = config
        self._registry = registry or NameRegistry()
        self._turn_config = turn
        self._tcp_config = tcp
        self._core: RendezvousCore | None = None
        self.udp: StunSockets | None = None
        self.tcp: TcpListener | None = None
        self._relays = RelaySockets(self._relayed, self.flush)
        self._timer = LoopTimer(self._on_timer)

    @property
    def core(self) -> RendezvousCore:
        if self._core is None:
            raise LocalProtocolError("the server has not been started")
        return self._core

    def flush(self) -> None:
        """Send what the core queued, open and close relay sockets, re-arm the timer."""
        core = self.core
        now = asyncio.get_running_loop().time()
        if core.relays_pending:
            self._relays.sync(core, now)
        udp, tcp, relays = self.udp, self.tcp, self._relays
        for transmit in core.datagrams_to_send(now):
            via = transmit.via
            if isinstance(via, UdpSocket):
                if udp is not None:
                    udp.sendto(via, transmit.data, transmit.destination)
            elif isinstance(via, RelaySocket):
                relays.sendto(via.relay, transmit.data, transmit.destination)
            elif tcp is not None:
                tcp.send(transmit.data, transmit.destination)
        self._timer.arm(core.get_timer())

    def _relayed(self, relay: Address, data: bytes, peer: Address, now: float) -> None:
        self.core.receive_relayed(relay, data, peer, now)

    def _on_timer(self) -> None:
        self.core.handle_timer(asyncio.get_running_loop().time())
        self.flush()

    async def start(self) -> None:
        if self._core is not None:
            raise LocalProtocolError("RendezvousServer started twice")
        loop = asyncio.get_running_loop()
        # The core reads the loop's clock; TURN REST usernames carry unix time.
        core = self._core = RendezvousCore(
            self._config,
            self._registry,
            turn=self._turn_config,
            wall_offset=time.time() - loop.time(),
        )
        try:
            self.udp = StunSockets(core, self.flush)
            self.udp.open()
            if self._tcp_config is not None:
                primary = core.config.stun.primary
                # Same port as the primary UDP socket, also when that was configured as 0.
                bound = self.udp.bound[primary]
                self.tcp = TcpListener(
                    core,
                    primary,
                    flush=self.flush,
                    config=self._tcp_config,
                    bind=(primary[0], bound[1]),
                )
                await self.tcp.start()
        except BaseException:
            self.close()
            raise
        log.info(
            "listening",
            addresses=[f"{ip}:{port}" for ip, port in core.local_addresses],
            rfc5780=core.binding.has_alternate,
            relay=core.turn is not None,
        )

    def close(self) -> None:
        self._timer.cancel()
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        self._relays.close()
        if self.udp is not None:
            self.udp.close()
            self.udp = None
