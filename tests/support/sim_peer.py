"""A peer agent in the in-process simulator: a thin netsim adapter (main socket plus the
birthday trick's extra sockets).

netsim's apps speak (data, address) pairs; the agent's datagrams carry a route as well
(peer.routes), which this adapter maps to simulated sockets: DIRECT to the main one,
ExtraSocket(i) to extra socket i, bound on first use, as the asyncio adapter does for real.
"""

from __future__ import annotations

from netsim import Host
from peer.agent import PeerAgent
from peer.routes import DIRECT, ExtraSocket
from stunproto.attributes import Address
from tests.support.side_socket import SideSocket


class AgentSockets:
    """A peer agent on its main simulated socket plus, on demand, its extra sockets."""

    def __init__(self, agent: PeerAgent, host: Host) -> None:
        self.agent = agent
        self.host = host
        self.extra: dict[ExtraSocket, SimExtraSocket] = {}

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.agent.receive_datagram(data, source, now, DIRECT)

    def handle_timer(self, now: float) -> None:
        self.agent.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.agent.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        for data, destination, via in self.agent.datagrams_to_send(now):
            if not isinstance(via, ExtraSocket):
                # DIRECT; the simulator has no TCP, so a peer there never asks for it.
                out.append((data, destination))
                continue
            extra = self.extra.get(via)
            if extra is None:
                extra = self.extra[via] = SimExtraSocket(self, via)
                self.host.bind(extra)
            extra.out.append((data, destination))
        return out


class SimExtraSocket(SideSocket):
    def __init__(self, owner: AgentSockets, via: ExtraSocket) -> None:
        super().__init__()
        self.owner = owner
        self.via = via

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.owner.agent.receive_datagram(data, source, now, self.via)
