"""Each NAT kind maps and filters exactly as RFC 4787 defines (tests shaped like RFC 5780's)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from netsim import DropReason, NatConfig, Network
from netsim.apps import Recorder, format_address
from netsim.nat import Behaviour
from tests.netsim.helpers import CLIENT_IP, IP1, IP2, P1, P2, PUBLIC, make_lab

EIM: Behaviour = "endpoint-independent"
ADM: Behaviour = "address-dependent"
APDM: Behaviour = "address-and-port-dependent"

KINDS: dict[str, tuple[Callable[[], NatConfig], Behaviour, Behaviour]] = {
    "full-cone": (NatConfig.full_cone, EIM, EIM),
    "restricted-cone": (NatConfig.restricted_cone, EIM, ADM),
    "port-restricted-cone": (NatConfig.port_restricted_cone, EIM, APDM),
    "symmetric": (NatConfig.symmetric, APDM, APDM),
}


@pytest.mark.parametrize("kind", KINDS)
def test_classic_kinds_are_rfc4787_combinations(kind: str) -> None:
    make, mapping, filtering = KINDS[kind]
    config = make()
    assert (config.mapping, config.filtering) == (mapping, filtering)
    assert config.port_allocation == ("random" if kind == "symmetric" else "preserve")


@pytest.mark.parametrize("mapping", [EIM, ADM, APDM])
def test_mapping_behaviour(mapping: Behaviour) -> None:
    # RFC 5780 4.3: the mapping seen from (IP1,P1), (IP2,P1), (IP2,P2).
    lab = make_lab(NatConfig(mapping=mapping, port_allocation="sequential"))
    m1, m2, m3 = lab.ask((IP1, P1)), lab.ask((IP2, P1)), lab.ask((IP2, P2))
    assert {m1[0], m2[0], m3[0]} == {PUBLIC}
    if mapping == EIM:
        assert m1 == m2 == m3
    elif mapping == ADM:
        assert m1 != m2 and m2 == m3
    else:
        assert len({m1, m2, m3}) == 3
    # And asking again reuses the mapping (no new one per packet).
    assert lab.ask((IP1, P1)) == m1


@pytest.mark.parametrize("filtering", [EIM, ADM, APDM])
def test_filtering_behaviour(filtering: Behaviour) -> None:
    # RFC 5780 4.4: the client talks to (IP1,P1) only; who else can reach its mapping?
    lab = make_lab(NatConfig(filtering=filtering))
    mapped = lab.ask((IP1, P1))
    for origin in [(IP2, P2), (IP1, P2), (IP1, P1)]:
        lab.servers[origin].send(b"from " + repr(origin).encode(), mapped)
    lab.net.run_for(1)
    got = {r.source for r in lab.client.received[1:]}
    expected = {
        EIM: {(IP2, P2), (IP1, P2), (IP1, P1)},
        ADM: {(IP1, P2), (IP1, P1)},
        APDM: {(IP1, P1)},
    }[filtering]
    assert got == expected
    assert lab.net.stats.dropped[DropReason.FILTERED] == 3 - len(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_classic_kind_end_to_end(kind: str) -> None:
    make, mapping, filtering = KINDS[kind]
    lab = make_lab(make())
    m1, m2, m3 = lab.ask((IP1, P1)), lab.ask((IP2, P1)), lab.ask((IP2, P2))
    assert (m1 == m2 == m3) == (mapping == EIM)
    lab.servers[(IP2, P2)].send(b"x", m1)
    lab.servers[(IP1, P2)].send(b"y", m1)
    lab.net.run_for(1)
    payloads = lab.client.payloads()[3:]
    # (IP2,P2) was contacted by the client, but through m3: only m1 matters here.
    if mapping == EIM:
        # m1 has sent to IP1:P1, IP2:P1, IP2:P2 (one binding): IP1:P2 passes only an
        # address-dependent (or no) filter.
        assert sorted(payloads) == {EIM: [b"x", b"y"], ADM: [b"x", b"y"], APDM: [b"x"]}[filtering]
    else:
        # Symmetric: m1 only ever sent to IP1:P1.
        assert payloads == []


def test_unsolicited_inbound_is_dropped() -> None:
    lab = make_lab(NatConfig.full_cone())
    lab.servers[(IP1, P1)].send(b"hello?", (PUBLIC, 40000))
    lab.net.run_for(1)
    assert lab.client.received == []
    assert lab.net.stats.dropped[DropReason.NO_BINDING] == 1


def test_private_address_is_not_routable_from_the_internet() -> None:
    lab = make_lab(NatConfig.full_cone())
    lab.servers[(IP1, P1)].send(b"x", (CLIENT_IP, 40000))
    lab.net.run_for(1)
    assert lab.net.stats.dropped[DropReason.NO_ROUTE] == 1


def test_udp_blocked() -> None:
    lab = make_lab(NatConfig.udp_blocked())
    lab.client.send(b"x", (IP1, P1))
    lab.net.run_for(1)
    assert lab.servers[(IP1, P1)].received == []
    assert lab.net.stats.dropped[DropReason.UDP_BLOCKED] == 1


# -- port allocation --------------------------------------------------------------------


def test_preserve_keeps_the_inside_port_then_falls_back_to_sequential() -> None:
    net = Network(rng=random.Random(0))
    nat = net.add_nat("nat", PUBLIC, NatConfig.full_cone())
    server = Recorder()
    net.add_host("server", IP1).bind(server, P1)
    apps = [Recorder(), Recorder()]
    for i, app in enumerate(apps):
        net.add_host(f"h{i}", f"192.168.1.{10 + i}", behind=nat).bind(app, 40000)
        app.send(b"x", (IP1, P1))
    net.run_for(1)
    assert server.sources() == [(PUBLIC, 40000), (PUBLIC, 40001)]


def test_sequential_allocation_is_predictable() -> None:
    # Symmetric with sequential ports: every new destination gets the next port.
    lab = make_lab(NatConfig.symmetric(port_allocation="sequential", port_range=(20000, 30000)))
    ports = [lab.ask(s)[1] for s in [(IP1, P1), (IP1, P2), (IP2, P1), (IP2, P2)]]
    assert ports == [20000, 20001, 20002, 20003]


def test_random_allocation_is_seeded() -> None:
    def ports(seed: int) -> list[int]:
        lab = make_lab(NatConfig.symmetric(), seed=seed)
        return [lab.ask(s)[1] for s in [(IP1, P1), (IP1, P2), (IP2, P1), (IP2, P2)]]

    first = ports(7)
    assert ports(7) == first
    assert ports(8) != first
    assert len(set(first)) == 4
    assert all(1024 <= p <= 65535 for p in first)
    assert [b - a for a, b in itertools.pairwise(first)] != [1, 1, 1]


def test_ports_exhausted() -> None:
    lab = make_lab(NatConfig.symmetric(port_allocation="sequential", port_range=(5000, 5001)))
    lab.ask((IP1, P1))
    lab.ask((IP1, P2))
    lab.client.send(b"x", (IP2, P1))
    lab.net.run_for(1)
    assert lab.net.stats.dropped[DropReason.PORTS_EXHAUSTED] == 1


# -- binding lifetime -------------------------------------------------------------------


def test_binding_expires_after_idle_timeout() -> None:
    lab = make_lab(NatConfig.full_cone(binding_timeout=30))
    mapped = lab.ask((IP1, P1))  # links have no delay: the binding is refreshed at t=0
    server = lab.servers[(IP1, P1)]
    server.send_at(29.5, b"in time", mapped)
    server.send_at(59.5, b"too late", mapped)  # idle since 29.5 (inbound refreshed it)
    lab.net.run_for(100)
    assert lab.client.payloads()[1:] == [b"in time"]
    assert lab.net.stats.dropped[DropReason.NO_BINDING] == 1
    assert lab.nat.bindings() == []


def test_idle_for_exactly_the_timeout_is_expired() -> None:
    lab = make_lab(NatConfig.full_cone(binding_timeout=30, refresh_on_inbound=False))
    mapped = lab.ask((IP1, P1))
    lab.servers[(IP1, P1)].send_at(30, b"x", mapped)
    lab.net.run_for(31)
    assert lab.client.payloads() == [format_address(mapped)]  # the whoami answer only


def test_outbound_keepalives_keep_the_binding() -> None:
    lab = make_lab(NatConfig.port_restricted_cone(binding_timeout=30, refresh_on_inbound=False))
    mapped = lab.ask((IP1, P1))
    for t in range(20, 200, 20):
        lab.client.send_at(t, b"keepalive", (IP1, P1))
    lab.servers[(IP1, P1)].send_at(190, b"still here", mapped)
    lab.net.run_for(200)
    assert lab.client.payloads()[-1] == b"still here"
    assert [b.external for b in lab.nat.bindings()] == [mapped]


@pytest.mark.parametrize("refresh", [True, False])
def test_refresh_on_inbound(refresh: bool) -> None:
    lab = make_lab(NatConfig.full_cone(binding_timeout=30, refresh_on_inbound=refresh))
    mapped = lab.ask((IP1, P1))
    for t in range(20, 101, 20):
        lab.servers[(IP1, P1)].send_at(t, b"ping", mapped)
    lab.net.run_for(101)
    # Without inbound refresh the binding dies at t=30: only the t=20 packet arrives.
    assert lab.client.payloads()[1:].count(b"ping") == (5 if refresh else 1)


def test_new_mapping_after_expiry() -> None:
    lab = make_lab(NatConfig.full_cone(port_allocation="sequential", binding_timeout=30))
    first = lab.ask((IP1, P1))
    lab.net.run_for(60)
    assert lab.ask((IP1, P1)) == (PUBLIC, first[1] + 1)


def test_flush_forgets_bindings() -> None:
    lab = make_lab(NatConfig.full_cone())
    mapped = lab.ask((IP1, P1))
    lab.nat.flush()
    lab.servers[(IP1, P1)].send(b"x", mapped)
    lab.net.run_for(1)
    assert lab.net.stats.dropped[DropReason.NO_BINDING] == 1


def test_change_public_ip() -> None:
    lab = make_lab(NatConfig.full_cone())
    old = lab.ask((IP1, P1))
    lab.nat.change_public_ip("198.51.100.77")
    lab.servers[(IP1, P1)].send(b"x", old)
    lab.net.run_for(1)
    assert lab.net.stats.dropped[DropReason.NO_ROUTE] == 1
    assert lab.ask((IP1, P1)) == ("198.51.100.77", old[1])


# -- hairpin ----------------------------------------------------------------------------


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpin(hairpin: bool) -> None:
    lab = make_lab(NatConfig.full_cone(hairpin=hairpin))
    net = lab.net
    other = Recorder()
    net.add_host("other", "192.168.1.3", behind=lab.nat).bind(other, 40001)
    other.send(b"whoami", (IP1, P1))
    net.run_for(1)
    other_public = (PUBLIC, 40001)
    client_public = lab.ask((IP1, P1))
    lab.client.send(b"via the NAT", other_public)
    net.run_for(1)
    if hairpin:
        # Delivered, with the source rewritten to the sender's public mapping.
        assert other.received[-1].data == b"via the NAT"
        assert other.received[-1].source == client_public
    else:
        assert other.payloads() == [b"198.51.100.1:40001"]  # only its whoami answer
        assert net.stats.dropped[DropReason.HAIRPIN_DISABLED] == 1


def test_hairpin_applies_filtering() -> None:
    # Port-restricted: the target's mapping never sent to the sender's public endpoint.
    lab = make_lab(NatConfig.port_restricted_cone(hairpin=True))
    other = Recorder()
    lab.net.add_host("other", "192.168.1.3", behind=lab.nat).bind(other, 40001)
    other.send(b"whoami", (IP1, P1))
    lab.net.run_for(1)
    lab.client.send(b"x", (PUBLIC, 40001))
    lab.net.run_for(1)
    assert lab.net.stats.dropped[DropReason.FILTERED] == 1


def test_hosts_on_one_lan_talk_directly() -> None:
    lab = make_lab(NatConfig.symmetric())
    other = Recorder()
    lab.net.add_host("other", "192.168.1.3", behind=lab.nat).bind(other, 5000)
    lab.client.send(b"hi", ("192.168.1.3", 5000))
    lab.net.run_for(1)
    assert other.sources() == [(CLIENT_IP, 40000)]
    assert lab.nat.bindings() == []
