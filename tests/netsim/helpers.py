"""Shared topology for the NAT behaviour tests: a client behind one NAT and a two-address
server (RFC 5780 style: primary/alternate IP x primary/alternate port)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from netsim import Address, Nat, NatConfig, Network
from netsim.apps import Recorder, Reflector, parse_address

IP1, IP2 = "203.0.113.1", "203.0.113.2"
P1, P2 = 3478, 3479
PUBLIC = "198.51.100.1"
CLIENT_IP = "192.168.1.2"


@dataclass
class Lab:
    net: Network
    nat: Nat
    client: Recorder
    client_address: Address
    servers: dict[Address, Reflector]

    def ask(self, server: Address) -> Address:
        """The client's public endpoint as seen by ``server`` (one request, one answer)."""
        before = len(self.client.received)
        self.client.send(b"whoami", server)
        assert self.net.run_until(lambda: len(self.client.received) > before, timeout=5)
        reply = self.client.received[-1]
        assert reply.source == server
        return parse_address(reply.data)


def make_lab(
    config: NatConfig, *, seed: int = 1, client_port: int = 40000, trace: bool = False
) -> Lab:
    net = Network(rng=random.Random(seed), record_trace=trace)
    nat = net.add_nat("nat", PUBLIC, config)
    host = net.add_host("client", CLIENT_IP, behind=nat)
    client = Recorder()
    client_address = host.bind(client, client_port)
    server = net.add_host("server", IP1, extra_ips=[IP2])
    servers: dict[Address, Reflector] = {}
    for ip in (IP1, IP2):
        for port in (P1, P2):
            servers[(ip, port)] = app = Reflector()
            server.bind(app, port, ip=ip)
    return Lab(net, nat, client, client_address, servers)
