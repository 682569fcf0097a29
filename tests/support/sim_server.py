"""The rendezvous (and its embedded relay) in the in-process simulator: a thin netsim adapter
over the same sans-I/O core the asyncio server runs."""

from __future__ import annotations

import random

from netsim import Host, Network
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import RelaySocket, UdpSocket
from rendezvous.turn_config import TurnConfig
from stunproto.attributes import Address
from tests.support.side_socket import SideSocket

WALL_OFFSET = 1_800_000_000.0  # virtual time 0 is this unix time (TURN REST expiries)
TURN_SECRET = b"sim relay secret"


class RendezvousApp:
    """The core on its primary socket; relay allocations get sockets of their own on the
    same host, bound and unbound on the core's demand."""

    def __init__(self, core: RendezvousCore, net: Network, host: Host) -> None:
        self.core = core
        self.net, self.host = net, host
        self.via = UdpSocket(core.local_addresses[0])
        self.relays: dict[Address, RelaySocketApp] = {}
        self._out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.core.receive_datagram(data, source, self.via, now)
        self.route(now)

    def route(self, now: float) -> None:
        """Bind and unbind relay sockets, then hand each datagram the core queued to the
        socket its route names (the simulator drains every socket of the host)."""
        core = self.core
        for relay in core.relays_to_close():
            closed = self.relays.pop(relay, None)
            if closed is not None:
                self.net.unbind(closed)
        for relay in core.relays_to_open():
            app = RelaySocketApp(self, relay)
            self.relays[relay] = app
            self.host.bind(app, relay[1], ip=relay[0])
            core.relay_opened(relay, now)  # (the held Allocate answer goes out below)
        for transmit in core.datagrams_to_send(now):
            if transmit.via == self.via:
                self._out.append((transmit.data, transmit.destination))
            elif isinstance(transmit.via, RelaySocket) and transmit.via.relay in self.relays:
                self.relays[transmit.via.relay].out.append((transmit.data, transmit.destination))

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.route(now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self.route(now)
        out, self._out = self._out, []
        return out


class RelaySocketApp(SideSocket):
    """One relay allocation's socket: datagrams from peers go to the core."""

    def __init__(self, owner: RendezvousApp, relay: Address) -> None:
        super().__init__()
        self.owner = owner
        self.relay = relay

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.owner.core.receive_relayed(self.relay, data, source, now)
        self.owner.route(now)


# The simulated server's key: a restarted one (tests/peer/test_sim_relogin.py) keeps it, as a
# real server keeps its key file, so that the peers' pins still hold.
SERVER_STATIC = bytes(range(32))


def add_server(
    net: Network, address: Address, rng: random.Random, *, relay: bool = False
) -> RendezvousApp:
    """The rendezvous at ``address`` on a host of its own (with the embedded relay if
    ``relay``), bound in ``net``."""
    core = RendezvousCore(
        RendezvousConfig(stun=StunServiceConfig(primary=address), server_key=SERVER_STATIC),
        NameRegistry(),
        turn=TurnConfig(realm="sim", shared_secret=TURN_SECRET, relay_ip=address[0])
        if relay
        else None,
        random_bytes=rng.randbytes,
        wall_offset=WALL_OFFSET,
    )
    server = RendezvousApp(core, net, net.add_host("server", address[0]))
    server.host.bind(server, address[1])
    return server
