"""Bulk transfers of our transport through netsim bottlenecks, in virtual time.

Each flow is a pair of hosts, each running one :class:`TransportApp` (a
``TransportConnection`` as a netsim ``DatagramApp``, plaintext: the channel's sealing
changes sizes by 25 bytes, not behaviour). :func:`bottleneck_world` puts every sender
behind one NAT whose WAN uplink is the bottleneck, so all flows share its drop-tail queue;
the receivers are public hosts. The round trip is set by the links' propagation delays.

Send times are jittered (each host holds what it sends at one instant for a random
0..``jitter`` seconds, in order: nothing is reordered), since in exact virtual time senders
in lockstep meet drop-tail's phase effect (the one whose packet comes first when a slot
frees always wins), which would make fairness a property of the arithmetic rather than of
the algorithm.

Used by tests/peer/transport/test_sim_congestion.py and bench/bulk.py (``link``).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from netsim import Address, BottleneckLink, LinkConfig, NatConfig, Network
from peer.transport.config import TransportConfig
from peer.transport.connection import TransportConnection
from peer.transport.events import StreamReadable
from peer.transport.recovery import CongestionKind, RecoveryConfig

CHUNK = 1024 * 1024
MBIT = 1e6
IP_UDP_HEADERS = 28  # what the bottleneck adds to every datagram (IPv4 + UDP)


class TransportApp:
    """One end of a transfer: the sender writes ``total`` bytes on one stream from
    ``start``; the receiver reads them and records (time, bytes received so far)."""

    def __init__(
        self,
        conn: TransportConnection,
        *,
        peer: Address | None = None,
        total: int = 0,
        start: float = 0.0,
        jitter: float = 0.0,
        rng: random.Random,
    ) -> None:
        self.conn = conn
        self.peer = peer  # (a receiver answers whoever sent to it)
        self.total = total
        self.start = start
        self.jitter = jitter
        self._rng = rng
        self._stream: int | None = None
        self._written = 0
        self._held: deque[tuple[float, list[bytes]]] = deque()  # (release time, packets)
        self._last_release = 0.0
        self.received = 0
        self.times: list[float] = []  # when bytes arrived, and how many had by then
        self.counts: list[int] = []
        self.finished: float | None = None

    # -- the DatagramApp interface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if self.peer is None:
            self.peer = source
        self.conn.receive_packet(data, now)
        self._events(now)

    def handle_timer(self, now: float) -> None:
        at = self.conn.get_timer()
        if at is not None and at <= now:
            self.conn.handle_timer(now)

    def get_timer(self) -> float | None:
        times = [self.conn.get_timer()]
        if self._held:
            times.append(self._held[0][0])
        if self.total and self._stream is None:
            times.append(self.start)
        return min((t for t in times if t is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.total and now >= self.start:
            self._fill()
        packets = self.conn.packets_to_send(now)
        self._events(now)
        held = self._held
        if packets:
            # One delay for what goes at one instant, never ahead of what went before.
            release = now + self._rng.uniform(0, self.jitter) if self.jitter else now
            self._last_release = max(self._last_release, release)
            held.append((self._last_release, packets))
        out: list[tuple[bytes, Address]] = []
        while held and held[0][0] <= now:
            peer = self.peer
            assert peer is not None  # (a receiver sends only once something came)
            out += [(packet, peer) for packet in held.popleft()[1]]
        return out

    # -- the transfer -----------------------------------------------------------------------

    def _fill(self) -> None:
        conn = self.conn
        if self._stream is None:
            self._stream = conn.open_stream()
        while self._written < self.total and conn.writable(self._stream):
            size = min(CHUNK, self.total - self._written)
            self._written += size
            conn.write(self._stream, bytes(size), end_stream=self._written == self.total)

    def _events(self, now: float) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            if isinstance(event, StreamReadable):
                stream = event.stream_id
                got = len(conn.read(stream))
                if got:
                    self.received += got
                    self.times.append(now)
                    self.counts.append(self.received)
                if conn.at_eof(stream) and self.finished is None:
                    self.finished = now

    def received_by(self, time: float) -> int:
        """Bytes received by ``time`` (inclusive)."""
        index = bisect_right(self.times, time)
        return self.counts[index - 1] if index else 0

    def goodput(self, start: float, end: float) -> float:
        """Bytes per second received over ``[start, end]``."""
        return (self.received_by(end) - self.received_by(start)) / (end - start)


@dataclass
class World:
    net: Network
    link: BottleneckLink  # the shared bottleneck (the data's direction)
    senders: list[TransportApp]
    receivers: list[TransportApp]
    rate_bps: float
    rtt: float

    @property
    def bdp(self) -> float:
        """The bandwidth-delay product in bytes."""
        return self.rate_bps / 8 * self.rtt

    def run(self, timeout: float, progress: Callable[[int, int], None] | None = None) -> bool:
        """Run until every receiver has everything (True) or ``timeout`` more virtual
        seconds pass; ``progress(received, total)`` is called at every percent."""
        receivers = self.receivers
        total = sum(sender.total for sender in self.senders)
        step = max(total // 100, 1)
        shown = [0]

        def done() -> bool:
            if progress is not None:
                got = sum(r.received for r in receivers)
                if got >= shown[0] + step:
                    shown[0] = got
                    progress(got, total)
            return all(r.finished is not None for r in receivers)

        return self.net.run_until(done, timeout=timeout)


def bottleneck_world(
    *,
    sizes: list[int],
    rate_mbit: float = 100.0,
    rtt: float = 0.05,
    queue_bdp: float = 1.0,
    loss: float = 0.0,
    congestion: CongestionKind = CongestionKind.CUBIC,
    starts: list[float] | None = None,
    jitter: float = 0.0002,
    seed: int = 1,
) -> World:
    """One flow per entry of ``sizes`` (bytes), all through one bottleneck of ``rate_mbit``
    with a drop-tail queue of ``queue_bdp`` bandwidth-delay products, ``rtt`` seconds of
    round trip (propagation only) and ``loss`` percent random loss each way."""
    rng = random.Random(seed)
    net = Network(rng=rng)
    rate_bps = rate_mbit * MBIT
    queue = int(rate_bps / 8 * rtt * queue_bdp)
    uplink = LinkConfig(
        rate_bps=rate_bps, queue_bytes=queue, loss=loss, overhead_bytes=IP_UDP_HEADERS
    )
    downlink = LinkConfig(loss=loss) if loss else None
    one_way = rtt / 2
    # The NAT's WAN link carries half the one-way delay, each receiver's the other half.
    nat = net.add_nat(
        "home",
        "198.51.100.1",
        NatConfig.port_restricted_cone(),
        delay=one_way / 2,
        uplink=uplink,
        downlink=downlink,
    )
    assert nat.uplink is not None
    config = TransportConfig(recovery=RecoveryConfig(congestion=congestion))
    senders, receivers = [], []
    for index, size in enumerate(sizes):
        receiver = TransportApp(
            TransportConnection(config=config, initiator=False, now=0.0),
            jitter=jitter,
            rng=random.Random(rng.random()),
        )
        address = net.add_host(f"r{index}", f"203.0.113.{index + 1}", delay=one_way / 2).bind(
            receiver, 4433
        )
        start = starts[index] if starts else 0.0
        sender = TransportApp(
            TransportConnection(config=config, initiator=True, now=start),
            peer=address,
            total=size,
            start=start,
            jitter=jitter,
            rng=random.Random(rng.random()),
        )
        net.add_host(f"s{index}", f"10.0.0.{index + 2}", behind=nat).bind(sender, 5000)
        senders.append(sender)
        receivers.append(receiver)
    return World(net, nat.uplink, senders, receivers, rate_bps, rtt)
