"""Router knobs: hairpin, binding timeout, WAN firewall, loss."""

from __future__ import annotations

import pytest

from natlab import SERVER_IPS, NatKind, NatSpec
from natlab.probe import PRIMARY_PORT, Reflector, outside_socket
from natlab.pytest_plugin import LabFactory

pytestmark = pytest.mark.lab

S1 = (SERVER_IPS[0], PRIMARY_PORT)
PRC = NatKind.PORT_RESTRICTED_CONE


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpin(lab_factory: LabFactory, hairpin: bool) -> None:
    # Port-restricted filtering on purpose: hairpin must not depend on it.
    lab = lab_factory("two-nats", a=NatSpec(kind=PRC, hairpin=hairpin), b=NatSpec(kind=PRC))
    refl = Reflector.open(lab)
    agent = lab.agent("a")
    x, y = agent.bind(), agent.bind()
    x_pub, y_pub = refl.observe(x, S1), refl.observe(y, S1)
    # RFC 5780 hairpin test: send from Y to X's mapped address.
    y.sendto("hairpin", x_pub)
    pkt = x.recv(1.0 if hairpin else 0.5)
    if not hairpin:
        assert pkt is None
        return
    assert pkt is not None and pkt.data == "hairpin"
    assert pkt.src == y_pub  # source rewritten to Y's public mapping
    x.sendto("back", pkt.src)
    back = y.recv(1.0)
    assert back is not None and back.src == x_pub


def test_hairpin_between_hosts_on_same_lan(lab_factory: LabFactory) -> None:
    lab = lab_factory("same-lan", nat=NatSpec(kind=NatKind.FULL_CONE, hairpin=True))
    refl = Reflector.open(lab)
    a, b = lab.agent("a").bind(), lab.agent("b").bind()
    a_pub, b_pub = refl.observe(a, S1), refl.observe(b, S1)
    b.sendto("via-public", a_pub)
    pkt = a.recv(1.0)
    assert pkt is not None and pkt.src == b_pub


@pytest.mark.parametrize("kind", [NatKind.FULL_CONE, PRC])
def test_binding_timeout_expires(lab_factory: LabFactory, kind: NatKind) -> None:
    lab = lab_factory("two-nats", a=NatSpec(kind=kind, binding_timeout=2), b=NatSpec(kind=PRC))
    refl = Reflector.open(lab)
    client = lab.agent("a").bind()
    mapped = refl.observe(client, S1)
    refl.socks[S1].sendto("fresh", mapped)
    pkt = client.recv(1.0)
    assert pkt is not None and pkt.data == "fresh"  # binding alive
    # Idle past the 2 s binding timeout: a blocking receive, not a sleep.
    assert client.recv(3.0) is None
    refl.socks[S1].sendto("stale", mapped)
    outside_socket(lab).sendto("stale-outside", mapped)
    assert client.recv(0.5) is None


@pytest.mark.parametrize("wan_firewall", [True, False])
def test_wan_firewall_keeps_cone_a_cone(lab_factory: LabFactory, wan_firewall: bool) -> None:
    lab = lab_factory(
        "two-nats", a=NatSpec(kind=PRC, wan_firewall=wan_firewall), b=NatSpec(kind=PRC)
    )
    refl = Reflector.open(lab)
    outside = outside_socket(lab)
    client = lab.agent("a").bind()
    public_ip = lab.routers["nat_a"].public_ip
    mapped = refl.observe(client, S1)
    assert mapped == (public_ip, client.port)
    # The peer's punch arrives before the client has sent to the peer (the
    # usual hole-punching race): unsolicited packet to the mapped port.
    outside.sendto("unsolicited", mapped)
    ct = lab.routers["nat_a"].run(
        ["conntrack", "-L", "-p", "udp", "--orig-src", outside.local[0]], check=False
    )
    assert (f"dport={client.port}" in ct.stdout) is not wan_firewall
    client.sendto("to-outside", outside.local)
    pkt = outside.recv(1.0)
    assert pkt is not None
    if wan_firewall:
        assert pkt.src == mapped
    else:
        # The conntrack entry created by the unsolicited packet forces
        # masquerade onto another port: the cone now looks symmetric.
        assert pkt.src[0] == public_ip and pkt.src[1] != client.port


def test_loss_knob(lab_factory: LabFactory) -> None:
    lab = lab_factory("two-nats", a=NatSpec(kind=PRC, loss=30), b=NatSpec(kind=PRC))
    refl = Reflector.open(lab)
    client = lab.agent("a").bind()
    server = refl.socks[S1]
    n = 400
    client.sendto("x", S1, count=n)
    got = len(server.recv_many(2.0, idle=0.3))
    # Binomial(400, 0.7): mean 280, sd ~9; +-80 is ~9 sd, never flaky.
    assert 200 <= got <= 360, got
    lab.set_loss("nat_a", 100)
    client.sendto("y", S1, count=50)
    assert server.recv_many(0.5) == []
    lab.set_loss("nat_a", 0)
    client.sendto("z", S1, count=n)
    assert len(server.recv_many(2.0, idle=0.3)) == n
