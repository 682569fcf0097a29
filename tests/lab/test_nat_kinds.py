"""Each NAT kind shows its RFC 4787 mapping and filtering behaviour."""

from __future__ import annotations

import pytest

from natlab import SERVER_IPS, NatKind, NatSpec
from natlab.probe import ALT_PORT, PRIMARY_PORT, Reflector, outside_socket, reachable
from natlab.pytest_plugin import LabFactory

pytestmark = pytest.mark.lab

S1 = (SERVER_IPS[0], PRIMARY_PORT)
S1_ALT = (SERVER_IPS[0], ALT_PORT)
S2 = (SERVER_IPS[1], PRIMARY_PORT)
CONES = [NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE]


@pytest.mark.parametrize("kind", [*CONES, NatKind.SYMMETRIC, NatKind.OPEN])
def test_mapping_behaviour(lab_factory: LabFactory, kind: NatKind) -> None:
    lab = lab_factory(
        "two-nats", a=NatSpec(kind=kind), b=NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
    )
    refl = Reflector.open(lab)
    client = lab.agent("a").bind()
    seen = [refl.observe(client, dest) for dest in (S1, S2, S1_ALT)]
    ips = {ip for ip, _ in seen}
    ports = [port for _, port in seen]
    if kind is NatKind.OPEN:
        assert seen == [(lab.hosts["a"].ip, client.port)] * 3
        return
    assert ips == {lab.routers["nat_a"].public_ip}
    if kind is NatKind.SYMMETRIC:
        # Address-and-port-dependent mapping: a fresh random port per destination.
        assert len(set(ports)) == 3, seen
    else:
        # Endpoint-independent mapping, and Linux keeps the source port.
        assert ports == [client.port] * 3, seen


# Which unsolicited senders may reach a mapped port after the client sent
# to S1 (RFC 4787 filtering): other port on S1, other server IP, third party.
EXPECTED_FILTERING = {
    NatKind.FULL_CONE: {"s1-alt-port", "s2", "outside"},
    NatKind.RESTRICTED_CONE: {"s1-alt-port"},
    NatKind.PORT_RESTRICTED_CONE: set(),
    NatKind.SYMMETRIC: set(),
    NatKind.OPEN: {"s1-alt-port", "s2", "outside"},
}


@pytest.mark.parametrize("kind", list(EXPECTED_FILTERING))
def test_filtering_behaviour(lab_factory: LabFactory, kind: NatKind) -> None:
    lab = lab_factory(
        "two-nats", a=NatSpec(kind=kind), b=NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
    )
    refl = Reflector.open(lab)
    client = lab.agent("a").bind()
    mapped = refl.observe(client, S1)
    outside = outside_socket(lab)
    got = reachable(
        client,
        {
            "s1-alt-port": (refl.socks[S1_ALT], mapped),
            "s2": (refl.socks[S2], mapped),
            "outside": (outside, mapped),
        },
        control=(refl.socks[S1], mapped),
    )
    assert got == EXPECTED_FILTERING[kind]
    if got:
        # Replies to an inbound-initiated flow must leave from the same
        # public port (the mapping stays endpoint independent).
        client.sendto("reply", S1_ALT)
        pkt = refl.socks[S1_ALT].recv(2.0)
        assert pkt is not None and pkt.src == mapped


def test_udp_blocked_drops_udp_both_ways(lab_factory: LabFactory) -> None:
    lab = lab_factory(
        "two-nats",
        a=NatSpec(kind=NatKind.UDP_BLOCKED),
        b=NatSpec(kind=NatKind.PORT_RESTRICTED_CONE),
    )
    refl = Reflector.open(lab)
    client = lab.agent("a").bind()
    client.sendto("out", S1)
    # Positive control through the other NAT proves the server is listening.
    other = lab.agent("b").bind()
    assert refl.observe(other, S1)[0] == lab.routers["nat_b"].public_ip
    assert refl.socks[S1].recv(0.5) is None
    refl.socks[S1].sendto("in", (lab.routers["nat_a"].public_ip, client.port))
    assert client.recv(0.5) is None
