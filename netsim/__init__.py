"""In-process, deterministic, discrete-event UDP network simulator with RFC 4787 NATs.

Drives sans-I/O apps (:class:`DatagramApp`) in virtual time: no sockets, no real clock.

>>> import random
>>> from netsim.apps import Echo, Recorder
>>> net = Network(rng=random.Random(1))
>>> nat = net.add_nat("home", "198.51.100.1", NatConfig.port_restricted_cone(), delay=0.01)
>>> client = Recorder()
>>> net.add_host("laptop", "192.168.1.2", behind=nat, delay=0.005).bind(client, 40000)
('192.168.1.2', 40000)
>>> server = net.add_host("server", "203.0.113.1", delay=0.01).bind(Echo(), 7)
>>> client.send(b"ping", server)
>>> net.run_until(lambda: bool(client.received), timeout=5)
True
>>> client.received[0].source, round(net.now, 6)  # RTT = 2 * (0.005 + 0.01 + 0.01)
(('203.0.113.1', 7), 0.05)
>>> [(b.internal, b.external) for b in nat.bindings()]
[(('192.168.1.2', 40000), ('198.51.100.1', 40000))]
"""

from netsim.app import Address, DatagramApp
from netsim.link import BottleneckLink, LinkConfig, LinkStats
from netsim.nat import BindingInfo, NatConfig, NatTable
from netsim.network import Network
from netsim.nodes import Host, Link, Nat
from netsim.tracing import DropReason, Stats, TraceEvent, TraceKind

__all__ = [
    "Address",
    "BindingInfo",
    "BottleneckLink",
    "DatagramApp",
    "DropReason",
    "Host",
    "Link",
    "LinkConfig",
    "LinkStats",
    "Nat",
    "NatConfig",
    "NatTable",
    "Network",
    "Stats",
    "TraceEvent",
    "TraceKind",
]
