"""Wiring the sans-I/O rendezvous service and peer agents into the in-process simulator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from natprobe.report import NatType
from netsim import Nat, NatConfig, Network
from peer.agent import AgentConfig, PeerAgent
from peer.events import AgentEvent, LoggedIn
from peer.identity import Identity
from peer.known_peers import KnownPeers
from peer.rendezvous_client import RendezvousClientConfig
from peer.session import SessionConfig
from tests.support.sim_peer import AgentSockets
from tests.support.sim_server import RendezvousApp, add_server

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
# What natprobe would say of each (what the peers log in with).
NAT_TYPES: dict[str, NatType] = {
    "open": NatType.OPEN_INTERNET,
    "full-cone": NatType.FULL_CONE,
    "restricted-cone": NatType.RESTRICTED_CONE,
    "port-restricted-cone": NatType.PORT_RESTRICTED_CONE,
    "symmetric": NatType.SYMMETRIC,
    "sequential-symmetric": NatType.SYMMETRIC,
}
# Pairs where no direct path exists: two symmetric NATs with random ports. (A symmetric
# NAT against a port-restricted cone needs the birthday trick, which the peers use.)
IMPOSSIBLE = {("symmetric", "symmetric")}


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
    server = add_server(net, SERVER, rng, relay=relay)
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
                    nat_type=NAT_TYPES[kind],
                ),
                session=session or SessionConfig(),
                relay_only=name in relay_only,
            ),
            static=identity.x25519_private,
            known_peers=(known_peers or {}).get(name),
            rng=random.Random(seed + index),
        )
        host.bind(AgentSockets(agent, host), port)
        peers.append(SimPeer(name, agent))
    return World(net, server, peers[0], peers[1])
