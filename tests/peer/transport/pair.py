"""Two transport connections joined by an in-memory link in virtual time: a fixed one-way
delay, optional random loss and an optional rate limit; packets are delivered in order of
arrival. ``run(until)`` advances virtual time until ``until()`` holds."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from peer.transport.config import TransportConfig
from peer.transport.connection import TransportConnection
from peer.transport.events import StreamOpened, TransportEvent


class Pair:
    def __init__(
        self,
        config: TransportConfig | None = None,
        *,
        delay: float = 0.005,
        loss: float = 0.0,
        rate_bytes: float | None = None,
        seed: int = 1,
    ) -> None:
        self.now = 0.0
        self.a = TransportConnection(config=config, initiator=True, now=0.0)
        self.b = TransportConnection(config=config, initiator=False, now=0.0)
        self.delay = delay
        self.loss = loss
        self.rate = rate_bytes
        self._rng = random.Random(seed)
        self._wire: list[tuple[float, int, int, bytes]] = []  # (arrival, seq, to b?, packet)
        self._seq = 0
        self._link_free = [0.0, 0.0]  # when each direction's link is idle again
        self.events: dict[TransportConnection, list[TransportEvent]] = {self.a: [], self.b: []}
        self.sent_packets = 0
        self.on_event: Callable[[TransportConnection, TransportEvent], None] | None = None
        # drop(sender, packet): True loses that packet (a test's chosen losses).
        self.drop: Callable[[TransportConnection, bytes], bool] | None = None

    def read_stream(self, stream: int, into: bytearray) -> bool:
        """Move what b can read of a's ``stream`` into ``into``; True at its end (a
        ``run`` condition: False until b has heard of the stream)."""
        if not any(isinstance(event, StreamOpened) for event in self.events[self.b]):
            return False
        while self.b.readable(stream):
            into.extend(self.b.read(stream))
        return self.b.at_eof(stream)

    def peer_of(self, conn: TransportConnection) -> TransportConnection:
        return self.b if conn is self.a else self.a

    def _flush(self) -> None:
        for index, conn in enumerate((self.a, self.b)):
            for packet in conn.packets_to_send(self.now):
                self.sent_packets += 1
                departure = self.now
                if self.rate is not None:
                    departure = max(self.now, self._link_free[index]) + len(packet) / self.rate
                    self._link_free[index] = departure
                if self.loss and self._rng.random() < self.loss:
                    continue
                if self.drop is not None and self.drop(conn, packet):
                    continue
                self._seq += 1
                heapq.heappush(self._wire, (departure + self.delay, self._seq, index, packet))
            self._drain_events(conn)

    def _drain_events(self, conn: TransportConnection) -> None:
        while (event := conn.next_event()) is not None:
            self.events[conn].append(event)
            if self.on_event is not None:
                self.on_event(conn, event)

    def run(self, until: Callable[[], bool], max_time: float = 600.0) -> None:
        self._flush()
        while not until():
            self._flush()  # (what until() did, reading for one, may have something to say)
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if self._wire:
                timers.append(self._wire[0][0])
            assert timers, "nothing more will happen, and the condition does not hold"
            self.now = max(self.now, min(timers))
            assert self.now <= max_time, f"not done after {max_time} s of virtual time"
            while self._wire and self._wire[0][0] <= self.now:
                _, _, index, packet = heapq.heappop(self._wire)
                receiver = self.b if index == 0 else self.a
                receiver.receive_packet(packet, self.now)
                self._drain_events(receiver)
            for conn in (self.a, self.b):
                timer = conn.get_timer()
                if timer is not None and timer <= self.now:
                    conn.handle_timer(self.now)
            self._flush()
