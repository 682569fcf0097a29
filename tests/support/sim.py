"""Wiring the sans-I/O rendezvous service and peer agents into the in-process simulator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from netsim import Host, Nat, NatConfig, Network
from peer.agent import AgentConfig, AgentEvent, PeerAgent
from peer.birthday import split_socket, via_socket
from peer.identity import Identity
from peer.known_peers import KnownPeers
from peer.rendezvous_client import LoggedIn, RendezvousClientConfig
from peer.session import SessionConfig
from rendezvous.registry import NameRegistry
from rendezvous.service import RendezvousConfig, RendezvousService
from rendezvous.stun_service import StunServiceConfig
from rendezvous.turn import Send as TurnSend
from rendezvous.turn import TurnConfig, TurnServer, is_turn_datagram
from stunproto.attributes import Address

SERVER = ("203.0.113.10", 3478)
KINDS: dict[str, NatConfig | None] = {
    "open": None,
    "full-cone": NatConfig.full_cone(),
    "restricted-cone": NatConfig.restricted_cone(),
    "port-restricted-cone": NatConfig.port_restricted_cone(),
    "symmetric": NatConfig.symmetric(),
}
# A symmetric NAT that allocates ports one after another (port prediction's case).
SEQUENTIAL_SYMMETRIC = NatConfig.symmetric(port_allocation="sequential")
# Pairs where no direct path exists: two symmetric NATs with random ports. (A symmetric
# NAT against a port-restricted cone needs the birthday trick, which the peers use.)
IMPOSSIBLE = {("symmetric", "symmetric")}


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


class AgentSockets:
    """A peer agent on its main simulated socket plus, on demand, the extra sockets the
    birthday trick asks for (tagged destinations), as the asyncio adapter does for real."""

    def __init__(self, agent: PeerAgent, host: Host) -> None:
        self.agent = agent
        self.host = host
        self.extra: dict[int, ExtraSocket] = {}

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.agent.receive_datagram(data, source, now)

    def handle_timer(self, now: float) -> None:
        self.agent.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.agent.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        for data, destination in self.agent.datagrams_to_send(now):
            index, real = split_socket(destination)
            if index is None:
                out.append((data, real))
                continue
            extra = self.extra.get(index)
            if extra is None:
                extra = self.extra[index] = ExtraSocket(self, index)
                self.host.bind(extra)
            extra.out.append((data, real))
        return out


class ExtraSocket:
    def __init__(self, owner: AgentSockets, index: int) -> None:
        self.owner = owner
        self.index = index
        self.out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.owner.agent.receive_datagram(data, via_socket(self.index, source), now)

    def handle_timer(self, now: float) -> None:
        return None

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        return out


@dataclass
class SimPeer:
    name: str
    agent: PeerAgent
    events: list[AgentEvent] = field(default_factory=list)

    def poll(self) -> list[AgentEvent]:
        while (event := self.agent.next_event()) is not None:
            self.events.append(event)
        return self.events

    def has(self, kind: type) -> bool:
        return any(isinstance(event, kind) for event in self.poll())

    def first(self, kind: type) -> AgentEvent:
        return next(event for event in self.poll() if isinstance(event, kind))


@dataclass
class World:
    net: Network
    server: RendezvousApp
    a: SimPeer
    b: SimPeer

    def login(self, timeout: float = 10.0) -> bool:
        for peer in (self.a, self.b):
            peer.agent.login(self.net.now)
            self.net.wake()
        return self.net.run_until(
            lambda: self.a.has(LoggedIn) and self.b.has(LoggedIn), timeout=timeout
        )


def build_world(
    kind_a: str,
    kind_b: str,
    *,
    rtt: float = 0.02,
    loss: float = 0.0,
    seed: int = 1,
    same_nat: bool = False,
    session: SessionConfig | None = None,
    known_peers: dict[str, KnownPeers] | None = None,
    relay: bool = False,
    relay_only: frozenset[str] = frozenset(),
) -> World:
    """Two peers (alice behind ``kind_a``, bob behind ``kind_b``) and a rendezvous server.
    The peers' one-way delay to the internet core is rtt/4 each, so a round trip between
    them is ``rtt``; the server sits at the core."""
    rng = random.Random(seed)
    net = Network(rng=rng)
    service = RendezvousService(
        RendezvousConfig(
            stun=StunServiceConfig(primary=SERVER), turn_secret=TURN_SECRET if relay else None
        ),
        NameRegistry(),
        random_bytes=rng.randbytes,
        wall_offset=WALL_OFFSET,
    )
    turn = None
    if relay:
        turn = TurnServer(
            TurnConfig(realm="sim", shared_secret=TURN_SECRET, relay_ip=SERVER[0]),
            random_bytes=rng.randbytes,
        )
    server = RendezvousApp(service, turn)
    server.host = net.add_host("server", SERVER[0])
    server.host.bind(server, SERVER[1])
    nats: dict[str, Nat | None] = {}
    shared: Nat | None = None
    peers = []
    for index, (name, kind) in enumerate((("alice", kind_a), ("bob", kind_b)), start=1):
        config = SEQUENTIAL_SYMMETRIC if kind == "sequential-symmetric" else KINDS[kind]
        if same_nat and shared is not None:
            nat = shared
        elif config is None:
            nat = None
        else:
            nat = net.add_nat(
                f"nat-{name}", f"198.51.100.{index}", config, delay=rtt / 4, loss=loss
            )
            shared = nat
        nats[name] = nat
        if nat is None:
            ip = f"192.0.2.{index}"
            host = net.add_host(name, ip, delay=rtt / 4, loss=loss)
        else:
            ip = f"10.0.{1 if same_nat else index}.{index + 1}"
            host = net.add_host(name, ip, behind=nat)
        identity = Identity.generate(urandom=rng.randbytes)
        port = 40000 + index
        agent = PeerAgent(
            AgentConfig(
                rendezvous=RendezvousClientConfig(
                    server=SERVER,
                    name=name,
                    public_key=identity.public_key,
                    private_endpoints=((ip, port),),
                    nat_type="symmetric" if kind == "sequential-symmetric" else kind,
                ),
                session=session or SessionConfig(),
                relay_only=name in relay_only,
            ),
            sign=identity.sign,
            static=identity.x25519_private,
            known_peers=(known_peers or {}).get(name),
            rng=random.Random(seed + index),
        )
        host.bind(AgentSockets(agent, host), port)
        peers.append(SimPeer(name, agent))
    return World(net, server, peers[0], peers[1])
