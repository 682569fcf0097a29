"""A peer agent in the in-process simulator: a thin netsim adapter (main socket plus the
birthday trick's extra sockets)."""

from __future__ import annotations

from netsim import Host
from peer.agent import PeerAgent
from peer.birthday import split_socket, via_socket
from stunproto.attributes import Address


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
