"""The project's real sans-I/O STUN server and client, driven across simulated NATs: the
RFC 5780 mapping and filtering tests classify every classic NAT kind correctly."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from netsim import Address, NatConfig, Network
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import UdpSocket
from stunproto import AttrType, ChangeRequest, MessageClass, Method, StunMessage
from stunproto.client import ResponseReceived, RetransmitPolicy, StunClient
from stunproto.message import new_transaction_id

PRIMARY, ALT_IP = ("203.0.113.1", 3478), "203.0.113.2"


class ServiceSocket:
    """One of the service's four local addresses; replies may leave from a sibling (the
    simulator drains every app on the host after each call)."""

    def __init__(
        self,
        service: RendezvousCore,
        local: Address,
        outboxes: dict[Address, list[tuple[bytes, Address]]],
    ) -> None:
        self.service, self.local, self.outboxes = service, local, outboxes

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.service.receive_datagram(data, source, UdpSocket(self.local), now)
        for reply in self.service.datagrams_to_send(now):
            assert isinstance(reply.via, UdpSocket)
            self.outboxes[reply.via.local].append((reply.data, reply.destination))

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outboxes[self.local] = self.outboxes[self.local], []
        return out


def probe(config: NatConfig, seed: int = 0) -> tuple[str, str]:
    """(mapping, filtering) as RFC 5780 section 4.3/4.4 would infer them."""
    rng = random.Random(seed)
    net = Network(rng=rng)
    stun = StunServiceConfig(primary=PRIMARY, alternate_ip=ALT_IP)
    service = RendezvousCore(RendezvousConfig(stun=stun), NameRegistry())
    server = net.add_host("stun", PRIMARY[0], extra_ips=[ALT_IP], delay=0.01)
    outboxes: dict[Address, list[tuple[bytes, Address]]] = {a: [] for a in service.local_addresses}
    for local in service.local_addresses:
        server.bind(ServiceSocket(service, local, outboxes), local[1], ip=local[0])
    nat = net.add_nat("nat", "198.51.100.1", config, delay=0.01)
    host = net.add_host("c", "192.168.1.2", behind=nat, delay=0.005)
    # Filtering tests need a fresh binding that has only talked to the primary address,
    # so they use a second socket (as natprobe does).
    policy = RetransmitPolicy(rto=0.1, max_sends=3, final_wait=2)
    mapping_client, filtering_client = StunClient(policy=policy), StunClient(policy=policy)
    host.bind(mapping_client, 50000)
    host.bind(filtering_client, 50001)

    def request(
        destination: Address,
        change: ChangeRequest | None = None,
        client: StunClient = mapping_client,
    ) -> StunMessage | None:
        attrs: tuple[tuple[int, object], ...] = ()
        if change is not None:
            attrs = ((AttrType.CHANGE_REQUEST, change),)
        message = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id(rng), attrs)
        client.send_request(message, destination, net.now)
        events: list[object] = []

        def done() -> bool:
            event = client.next_event()
            if event is not None:
                events.append(event)
            return bool(events)

        assert net.run_until(done, timeout=10)
        event = events[0]
        return event.response if isinstance(event, ResponseReceived) else None

    def mapped(destination: Address) -> Address:
        response = request(destination)
        assert response is not None
        address: Address = response.get(AttrType.XOR_MAPPED_ADDRESS)
        return address

    m1 = mapped(PRIMARY)
    m2 = mapped((ALT_IP, PRIMARY[1]))
    m3 = mapped((ALT_IP, PRIMARY[1] + 1))
    if m1 == m2:
        mapping = "endpoint-independent"
    elif m2 == m3:
        mapping = "address-dependent"
    else:
        mapping = "address-and-port-dependent"
    assert request(PRIMARY, client=filtering_client) is not None
    both = ChangeRequest(change_ip=True, change_port=True)
    if request(PRIMARY, both, filtering_client) is not None:
        filtering = "endpoint-independent"
    elif request(PRIMARY, ChangeRequest(change_port=True), filtering_client) is not None:
        filtering = "address-dependent"
    else:
        filtering = "address-and-port-dependent"
    return mapping, filtering


KINDS: dict[str, Callable[[], NatConfig]] = {
    "full-cone": NatConfig.full_cone,
    "restricted-cone": NatConfig.restricted_cone,
    "port-restricted-cone": NatConfig.port_restricted_cone,
    "symmetric": NatConfig.symmetric,
    "address-dependent-mapping": lambda: NatConfig(
        mapping="address-dependent", filtering="address-dependent"
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_rfc5780_probe_classifies_each_kind(kind: str) -> None:
    config = KINDS[kind]()
    assert probe(config) == (config.mapping, config.filtering)
