"""The simulated network's nodes: hosts with their bound sockets, NATs, the realms (address
spaces) they sit in, and the link that joins each to its realm's router.

``Network`` (netsim.network) builds them and moves packets between them; the classes here
hold the state and the checks that belong to one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.app import Address, DatagramApp
from netsim.link import BottleneckLink
from netsim.nat import BindingInfo, NatConfig, NatTable

if TYPE_CHECKING:
    from netsim.network import Network

EPHEMERAL_PORTS = (49152, 65535)


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """The link from a host or NAT to the router of the realm it sits in (both ways)."""

    delay: float = 0.0  # one-way, seconds
    jitter: float = 0.0  # each crossing adds uniform(0, jitter); may reorder packets
    loss: float = 0.0  # percent (0..100) of crossings dropped, each direction independently

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        if not 0 <= self.loss <= 100:
            raise ValueError("loss must be a percentage 0..100")


class Realm:
    """One address space: the internet, or a NAT's LAN. Addresses are unique within it."""

    def __init__(self, nat: Nat | None) -> None:
        self.nat = nat  # the NAT this realm is the inside of; None for the internet
        self.nodes: dict[str, Host | Nat] = {}


@dataclass(slots=True, eq=False)
class BoundSocket:
    """An app bound to one address of a host, with the timer the network keeps for it."""

    host: Host
    address: Address
    app: DatagramApp
    timer_at: float | None = None
    timer_gen: int = 0  # bumped on every reschedule; stale heap entries are skipped
    fires_at_instant: int = 0
    last_fire: float = -1.0
    closed: bool = False


class Host:
    def __init__(self, net: Network, name: str, ips: list[str], realm: Realm, link: Link):
        self.name = name
        self.ips = ips
        self.link = link  # replace freely mid-run to change conditions
        # Bottlenecks in series with ``link``: toward the realm's router and back.
        self.uplink: BottleneckLink | None = None
        self.downlink: BottleneckLink | None = None
        self._net = net
        self._realm = realm
        self._sockets: dict[Address, BoundSocket] = {}
        self._next_ephemeral = EPHEMERAL_PORTS[0]

    @property
    def ip(self) -> str:
        return self.ips[0]

    @property
    def behind(self) -> Nat | None:
        return self._realm.nat

    def bind(self, app: DatagramApp, port: int = 0, *, ip: str | None = None) -> Address:
        """Bind ``app`` to ``ip:port`` (primary IP; port 0 = next free ephemeral port) and
        service it once, so datagrams it queued before binding go out now."""
        ip = self.ip if ip is None else ip
        if ip not in self.ips:
            raise ValueError(f"{self.name} has no address {ip}")
        if port == 0:
            port = self._ephemeral(ip)
        address = (ip, port)
        if address in self._sockets:
            raise ValueError(f"{ip}:{port} already bound on {self.name}")
        sock = BoundSocket(self, address, app)
        self._sockets[address] = sock
        self._net._register(sock)
        self._net._service_host(self)
        return address

    def _ephemeral(self, ip: str) -> int:
        lo, hi = EPHEMERAL_PORTS
        for _ in range(hi - lo + 1):
            port = self._next_ephemeral
            self._next_ephemeral = lo if port == hi else port + 1
            if (ip, port) not in self._sockets:
                return port
        raise RuntimeError(f"{self.name}: no free ephemeral port")

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.ip!r})"


class Nat:
    def __init__(
        self, net: Network, name: str, public_ip: str, config: NatConfig, outer: Realm, link: Link
    ):
        self.name = name
        self.link = link
        # Bottlenecks on the WAN side, in series with ``link``: outbound and inbound.
        self.uplink: BottleneckLink | None = None
        self.downlink: BottleneckLink | None = None
        self.table = NatTable(config, public_ip, net.rng)
        self._net = net
        self._outer = outer
        self._inside = Realm(self)

    @property
    def config(self) -> NatConfig:
        return self.table.config

    @property
    def public_ip(self) -> str:
        return self.table.public_ip

    @property
    def behind(self) -> Nat | None:
        return self._outer.nat

    def bindings(self) -> list[BindingInfo]:
        """Live bindings at the network's current time."""
        return self.table.bindings(self._net.now)

    def flush(self) -> None:
        """Forget all bindings (a reboot)."""
        self.table.flush()

    def change_public_ip(self, ip: str) -> None:
        """Renumber the WAN side; every binding is lost, as when a router's lease changes."""
        if ip == self.public_ip:
            self.table.flush()
            return
        if ip in self._inside.nodes:
            raise ValueError(f"address {ip} already in use on {self.name}'s LAN")
        self._net._claim(self._outer, ip, self)
        del self._outer.nodes[self.public_ip]
        self.table.public_ip = ip
        self.table.flush()

    def __repr__(self) -> str:
        return f"Nat({self.name!r}, {self.public_ip!r})"
