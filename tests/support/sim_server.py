"""The rendezvous (and its embedded relay) in the in-process simulator: a thin netsim adapter."""

from __future__ import annotations

import random

from netsim import Host, Network
from rendezvous.registry import NameRegistry
from rendezvous.service import RendezvousConfig, RendezvousService
from rendezvous.stun_service import StunServiceConfig
from rendezvous.turn import Send as TurnSend
from rendezvous.turn import TurnConfig, TurnServer, is_turn_datagram
from stunproto.attributes import Address

WALL_OFFSET = 1_800_000_000.0  # virtual time 0 is this unix time (TURN REST expiries)
TURN_SECRET = b"sim relay secret"


class RendezvousApp:
    """The rendezvous service, and optionally the embedded TURN relay, on one simulated
    socket; relay allocations get sockets of their own on the same host, bound on demand."""

    def __init__(self, service: RendezvousService, turn: TurnServer | None = None) -> None:
        self.service = service
        self.turn = turn
        self.local = service.local_addresses[0]
        self.host: Host | None = None  # set once bound, to bind relay sockets
        self.relays: dict[Address, RelaySocketApp] = {}
        self._out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if self.turn is not None and is_turn_datagram(data):
            self.route(self.turn.handle(data, source, self.local, now, now + WALL_OFFSET))
            return
        reply = self.service.handle(data, source, self.local, now)
        if reply is not None:
            self._out.append((reply.data, reply.destination))

    def route(self, sends: list[TurnSend]) -> None:
        assert self.turn is not None and self.host is not None
        for relay in self.turn.relays_to_open():
            app = RelaySocketApp(self, relay)
            self.relays[relay] = app
            self.host.bind(app, relay[1], ip=relay[0])
        for send in sends:
            if send.from_socket == self.local:
                self._out.append((send.data, send.destination))
            elif send.from_socket in self.relays:
                self.relays[send.from_socket].out.append((send.data, send.destination))

    def handle_timer(self, now: float) -> None:
        self.service.handle_timer(now)
        if self.turn is not None:
            self.turn.handle_timer(now)

    def get_timer(self) -> float | None:
        timers = [self.service.get_timer(), self.turn.get_timer() if self.turn else None]
        return min((t for t in timers if t is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self._out + [(r.data, r.destination) for r in self.service.datagrams_to_send(now)]
        self._out = []
        return out


class RelaySocketApp:
    """One relay allocation's socket: datagrams from peers go to the TURN server."""

    def __init__(self, owner: RendezvousApp, relay: Address) -> None:
        self.owner = owner
        self.relay = relay
        self.out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        assert self.owner.turn is not None
        self.owner.route(self.owner.turn.handle_relayed(self.relay, data, source, now))

    def handle_timer(self, now: float) -> None:
        return None

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        return out


def add_server(
    net: Network, address: Address, rng: random.Random, *, relay: bool = False
) -> RendezvousApp:
    """The rendezvous at ``address`` on a host of its own (with the embedded relay if
    ``relay``), bound in ``net``."""
    service = RendezvousService(
        RendezvousConfig(
            stun=StunServiceConfig(primary=address), turn_secret=TURN_SECRET if relay else None
        ),
        NameRegistry(),
        random_bytes=rng.randbytes,
        wall_offset=WALL_OFFSET,
    )
    turn = None
    if relay:
        turn = TurnServer(
            TurnConfig(realm="sim", shared_secret=TURN_SECRET, relay_ip=address[0]),
            random_bytes=rng.randbytes,
        )
    server = RendezvousApp(service, turn)
    server.host = net.add_host("server", address[0])
    server.host.bind(server, address[1])
    return server
