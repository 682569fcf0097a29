"""Tiny sans-I/O apps for tests and examples: a scripted recorder, an echo, a reflector."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from netsim.app import Address


@dataclass(frozen=True, slots=True)
class Received:
    time: float
    data: bytes
    source: Address


@dataclass(eq=False)
class Recorder:
    """Records every datagram; sends what it is told, now (:meth:`send`) or at a virtual
    time (:meth:`send_at`, driven by its timer)."""

    received: list[Received] = field(default_factory=list)
    _outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    _scheduled: list[tuple[float, int, bytes, Address]] = field(default_factory=list)
    _seq: int = 0

    def send(self, data: bytes, destination: Address) -> None:
        self._outbox.append((data, destination))

    def send_at(self, time: float, data: bytes, destination: Address) -> None:
        self._seq += 1  # keeps same-time sends in call order
        heapq.heappush(self._scheduled, (time, self._seq, data, destination))

    def payloads(self) -> list[bytes]:
        return [r.data for r in self.received]

    def sources(self) -> list[Address]:
        return [r.source for r in self.received]

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.received.append(Received(now, data, source))

    def handle_timer(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, data, destination = heapq.heappop(self._scheduled)
            self._outbox.append((data, destination))

    def get_timer(self) -> float | None:
        return self._scheduled[0][0] if self._scheduled else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out


@dataclass(eq=False)
class Echo(Recorder):
    """A recorder that also sends every datagram back to where it came from."""

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        super().receive_datagram(data, source, now)
        self.send(data, source)


def format_address(address: Address) -> bytes:
    return f"{address[0]}:{address[1]}".encode()


def parse_address(data: bytes) -> Address:
    ip, _, port = data.decode().rpartition(":")
    return (ip, int(port))


@dataclass(eq=False)
class Reflector(Recorder):
    """Answers every datagram with the source address it saw (``b"ip:port"``), like a
    STUN Binding response: how a peer behind NAT learns its public endpoint."""

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        super().receive_datagram(data, source, now)
        self.send(format_address(source), source)
