"""A deterministic discrete-event network: hosts, nested NATs, lossy delayed links.

Topology is a tree of *realms* (address spaces). The root realm is the internet; every NAT
has an inside realm (its LAN) and sits, by its public IP, in its outer realm (the internet,
or another NAT's inside for carrier-grade NAT). Every host and NAT has one link to the
router of the realm it sits in, with a one-way delay, jitter and loss applied per crossing,
so a datagram from host A to host B takes the sum of the delays of every link on the path
(A's, the NATs' on both sides, B's) and a round trip between two internet hosts is
``2 * (delay_A + delay_B)``. A link may also carry a bottleneck in either direction
(netsim.link: a rate, a drop-tail queue, delay and loss), passed before the link's own
delay, jitter and loss; see :meth:`Network.set_bottleneck`.

Packets move hop by hop as events, so a NAT translates (and creates, refreshes or finds
expired) a binding at the virtual time the packet actually crosses it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netsim.app import Address, DatagramApp
from netsim.link import BottleneckLink, LinkConfig
from netsim.nat import NatConfig
from netsim.nodes import BoundSocket, Host, Link, Nat, Realm
from netsim.tracing import DropReason, Stats, TraceEvent, TraceKind

# A timer that keeps asking to fire at the same instant without time advancing is a bug in
# the app (it never clears it); fail loudly rather than spin forever.
_MAX_TIMER_FIRES_AT_ONE_INSTANT = 10_000


@dataclass(slots=True, eq=False)
class _Packet:
    id: int
    data: bytes
    src: Address
    dst: Address


class Network:
    def __init__(self, *, rng: random.Random, record_trace: bool = False) -> None:
        self.rng = rng
        self.now = 0.0
        self.stats = Stats()
        self.trace: list[TraceEvent] = []
        self._record = record_trace
        self._internet = Realm(None)
        self._queue: list[tuple[float, int, Callable[..., None], Any]] = []
        self._seq = 0
        self._packet_ids = 0
        self._by_app: dict[int, BoundSocket] = {}  # id(app): apps need not be hashable
        self.hosts: dict[str, Host] = {}
        self.nats: dict[str, Nat] = {}
        # Pairs of public IPs the internet does not carry packets between (either way):
        # a path that breaks while the rest of the network goes on working.
        self.partitions: set[frozenset[str]] = set()

    # -- topology ----------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        ip: str,
        *,
        behind: Nat | None = None,
        extra_ips: Sequence[str] = (),
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        uplink: LinkConfig | None = None,
        downlink: LinkConfig | None = None,
    ) -> Host:
        """A host at ``ip`` (plus ``extra_ips``, e.g. a STUN server's alternate address) on
        the internet or on the LAN of ``behind``; ``uplink``/``downlink``: bottlenecks as
        in :meth:`set_bottleneck`."""
        self._new_name(name)
        realm = self._realm(behind)
        host = Host(
            self, name, [ip, *extra_ips], realm, Link(delay=delay, jitter=jitter, loss=loss)
        )
        if len(set(host.ips)) != len(host.ips):
            raise ValueError(f"{name}: duplicate addresses {host.ips}")
        for address in host.ips:  # check all before claiming any: no half-added host
            self._check_free(realm, address)
        for address in host.ips:
            self._claim(realm, address, host)
        self.hosts[name] = host
        self.set_bottleneck(host, uplink=uplink, downlink=downlink)
        return host

    def add_nat(
        self,
        name: str,
        public_ip: str,
        config: NatConfig | None = None,
        *,
        behind: Nat | None = None,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        uplink: LinkConfig | None = None,
        downlink: LinkConfig | None = None,
    ) -> Nat:
        """A NAT whose WAN side is ``public_ip`` on the internet or, for carrier-grade NAT,
        on the LAN of ``behind``. The link (and bottlenecks) are the WAN side's."""
        self._new_name(name)
        outer = self._realm(behind)
        nat = Nat(
            self,
            name,
            public_ip,
            config or NatConfig(),
            outer,
            Link(delay=delay, jitter=jitter, loss=loss),
        )
        self._claim(outer, public_ip, nat)
        self.nats[name] = nat
        self.set_bottleneck(nat, uplink=uplink, downlink=downlink)
        return nat

    def set_bottleneck(
        self,
        node: Host | Nat,
        *,
        uplink: LinkConfig | None = None,
        downlink: LinkConfig | None = None,
    ) -> tuple[BottleneckLink | None, BottleneckLink | None]:
        """Put fresh bottlenecks (None: none) on ``node``'s link: ``uplink`` from the node
        toward its realm's router (what a host sends, what a NAT forwards out of its LAN),
        ``downlink`` back. Every flow through that direction shares the one queue. Returns
        them (also ``node.uplink`` / ``node.downlink``) for their stats."""
        if node._net is not self:
            raise ValueError("that node belongs to another network")
        node.uplink = None if uplink is None else BottleneckLink(uplink, rng=self.rng)
        node.downlink = None if downlink is None else BottleneckLink(downlink, rng=self.rng)
        return node.uplink, node.downlink

    def unbind(self, app: DatagramApp) -> None:
        """Close the app's socket: its port is freed, its timer never fires again."""
        sock = self._by_app.pop(id(app))
        sock.closed = True
        del sock.host._sockets[sock.address]

    def address_of(self, app: DatagramApp) -> Address:
        return self._by_app[id(app)].address

    def _new_name(self, name: str) -> None:
        if name in self.hosts or name in self.nats:
            raise ValueError(f"duplicate node name {name!r}")

    def _realm(self, behind: Nat | None) -> Realm:
        if behind is None:
            return self._internet
        if behind._net is not self:
            raise ValueError("that NAT belongs to another network")
        return behind._inside

    def _check_free(self, realm: Realm, ip: str) -> None:
        # Addresses are unique within a realm; realms are separate address spaces, so two
        # LANs may both use 192.168.1.2.
        if ip in realm.nodes or (realm.nat is not None and ip == realm.nat.public_ip):
            raise ValueError(f"address {ip} already in use in that realm")

    def _claim(self, realm: Realm, ip: str, node: Host | Nat) -> None:
        self._check_free(realm, ip)
        realm.nodes[ip] = node

    def _register(self, sock: BoundSocket) -> None:
        if id(sock.app) in self._by_app:
            raise ValueError("that app is already bound; one app object per socket")
        self._by_app[id(sock.app)] = sock

    # -- running -----------------------------------------------------------------------

    def run_until(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Process events until ``predicate()`` holds (checked before starting and after
        every event) or ``timeout`` virtual seconds pass. On success ``now`` is the time of
        the event that made it true; on timeout it is the deadline."""
        deadline = self.now + timeout
        self._service_all()
        if predicate():
            return True
        queue = self._queue
        while queue and queue[0][0] <= deadline:
            time, _, handler, arg = heapq.heappop(queue)
            self.now = time
            handler(arg)
            if predicate():
                return True
        self.now = deadline
        return predicate()

    def run_for(self, seconds: float) -> None:
        """Process every event due within ``seconds`` and leave ``now`` at the end."""
        self.run_until(lambda: False, timeout=seconds)

    def call_at(self, time: float, action: Callable[[], None]) -> None:
        """Run ``action`` (a test's stimulus, e.g. telling an app to connect) at ``time``;
        afterwards every app is serviced, since the action may have touched any of them."""
        self._schedule(max(time, self.now), self._call, action)

    def wake(self, app: DatagramApp | None = None) -> None:
        """Drain and re-read timers now, for one app or all, after poking them directly.
        (run_until and run_for do this for all apps when they start.)"""
        if app is None:
            self._service_all()
        else:
            self._service_host(self._by_app[id(app)].host)

    def _call(self, action: Callable[[], None]) -> None:
        action()
        self._service_all()

    def _schedule(self, time: float, handler: Callable[..., None], arg: object) -> None:
        # The sequence number breaks ties in time: same-instant events run in the order
        # they were scheduled, never by comparing handlers or packets.
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, handler, arg))

    # -- apps ----------------------------------------------------------------------------

    def _service_all(self) -> None:
        for host in self.hosts.values():
            self._service_host(host)

    def _service_host(self, host: Host) -> None:
        # Every socket on the host, not just the one called: apps on one host may share
        # state (a STUN server answering CHANGE-REQUEST from its other address is one
        # object per socket), so a call to one can queue datagrams on another.
        for sock in list(host._sockets.values()):
            self._service(sock)

    def _service(self, sock: BoundSocket) -> None:
        now = self.now
        for data, dst in sock.app.datagrams_to_send(now):
            self._send(sock, data, dst)
        at = sock.app.get_timer()
        if at != sock.timer_at:
            sock.timer_at = at
            sock.timer_gen += 1
            if at is not None:
                self._schedule(max(at, now), self._on_timer, (sock, sock.timer_gen))

    def _on_timer(self, arg: tuple[BoundSocket, int]) -> None:
        sock, gen = arg
        if sock.closed or gen != sock.timer_gen:
            return
        sock.timer_at = None  # consumed; _service re-arms from get_timer()
        at = sock.app.get_timer()
        if at is not None and at <= self.now:
            if self.now == sock.last_fire:
                sock.fires_at_instant += 1
                if sock.fires_at_instant > _MAX_TIMER_FIRES_AT_ONE_INSTANT:
                    raise RuntimeError(f"timer of app at {sock.address} never advances")
            else:
                sock.last_fire, sock.fires_at_instant = self.now, 0
            sock.app.handle_timer(self.now)
        self._service_host(sock.host)

    def _deliver(self, arg: tuple[Host, _Packet]) -> None:
        host, pkt = arg
        sock = host._sockets.get(pkt.dst)
        if sock is None:
            self._drop(pkt, host.name, DropReason.PORT_UNREACHABLE)
            return
        self.stats.delivered += 1
        if self._record:
            self._log(TraceKind.DELIVER, pkt, host.name)
        sock.app.receive_datagram(pkt.data, pkt.src, self.now)
        self._service_host(host)

    # -- forwarding ----------------------------------------------------------------------

    def _send(self, sock: BoundSocket, data: bytes, dst: Address) -> None:
        self._packet_ids += 1
        pkt = _Packet(self._packet_ids, data, sock.address, dst)
        self.stats.sent += 1
        host = sock.host
        if self._record:
            self._log(TraceKind.SEND, pkt, host.name)
        self._cross(host.link, host.uplink, host.name, pkt, self._arrive, (host._realm, pkt))

    def _cross(
        self,
        link: Link,
        bottleneck: BottleneckLink | None,
        where: str,
        pkt: _Packet,
        handler: Callable[[Any], None],
        arg: object,
    ) -> None:
        start = self.now
        if bottleneck is not None:
            passed = bottleneck.transmit(len(pkt.data), start)
            if isinstance(passed, DropReason):
                self._drop(pkt, where, passed)
                return
            start = passed
        # Random draws only when the link is lossy/jittery, so adding a clean link
        # elsewhere does not perturb the random sequence of a seeded scenario.
        if link.loss and self.rng.random() * 100 < link.loss:
            self._drop(pkt, where, DropReason.LOSS)
            return
        delay = link.delay + (self.rng.uniform(0, link.jitter) if link.jitter else 0.0)
        self._schedule(start + delay, handler, arg)

    def _arrive(self, arg: tuple[Realm, _Packet]) -> None:
        """The packet is at the router of ``realm``: forward it one hop."""
        realm, pkt = arg
        cut = self.partitions and realm.nat is None
        if cut and frozenset((pkt.src[0], pkt.dst[0])) in self.partitions:
            self._drop(pkt, "internet", DropReason.PARTITIONED)
            return
        node = realm.nodes.get(pkt.dst[0])
        if isinstance(node, Host):
            self._cross(node.link, node.downlink, node.name, pkt, self._deliver, (node, pkt))
        elif isinstance(node, Nat):
            self._cross(node.link, node.downlink, node.name, pkt, self._nat_inbound, (node, pkt))
        elif realm.nat is None:
            self._drop(pkt, "internet", DropReason.NO_ROUTE)
        elif pkt.dst[0] == realm.nat.public_ip:
            self._hairpin(realm.nat, pkt)
        else:
            nat = realm.nat
            external = nat.table.outbound(pkt.src, pkt.dst, self.now)
            if isinstance(external, DropReason):
                self._drop(pkt, nat.name, external)
                return
            pkt.src = external
            if self._record:
                self._log(TraceKind.NAT_OUT, pkt, nat.name)
            self._cross(nat.link, nat.uplink, nat.name, pkt, self._arrive, (nat._outer, pkt))

    def _nat_inbound(self, arg: tuple[Nat, _Packet]) -> None:
        nat, pkt = arg
        internal = nat.table.inbound(pkt.src, pkt.dst[1], self.now)
        if isinstance(internal, DropReason):
            self._drop(pkt, nat.name, internal)
            return
        pkt.dst = internal
        if self._record:
            self._log(TraceKind.NAT_IN, pkt, nat.name)
        self._arrive((nat._inside, pkt))  # the NAT is its LAN's router: no extra hop

    def _hairpin(self, nat: Nat, pkt: _Packet) -> None:
        # RFC 4787 REQ-9: translate the source as for any outbound packet, then treat the
        # packet as arriving at the public side (same filtering), so the receiver sees the
        # sender's public mapping. Without hairpin support the router itself swallows it.
        if not nat.config.hairpin:
            self._drop(pkt, nat.name, DropReason.HAIRPIN_DISABLED)
            return
        external = nat.table.outbound(pkt.src, pkt.dst, self.now)
        if isinstance(external, DropReason):
            self._drop(pkt, nat.name, external)
            return
        internal = nat.table.inbound(external, pkt.dst[1], self.now)
        if isinstance(internal, DropReason):
            self._drop(pkt, nat.name, internal)
            return
        pkt.src, pkt.dst = external, internal
        if self._record:
            self._log(TraceKind.HAIRPIN, pkt, nat.name)
        self._arrive((nat._inside, pkt))

    def _drop(self, pkt: _Packet, where: str, reason: DropReason) -> None:
        self.stats.dropped[reason] += 1
        self.stats.dropped_at[where, reason] += 1
        if self._record:
            self._log(TraceKind.DROP, pkt, where, reason)

    def _log(
        self, kind: TraceKind, pkt: _Packet, where: str, reason: DropReason | None = None
    ) -> None:
        self.trace.append(TraceEvent(self.now, kind, pkt.id, where, pkt.src, pkt.dst, reason))
