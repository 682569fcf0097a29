"""Links (delay, jitter, loss), event ordering, timers, nested NAT, replay, performance."""

from __future__ import annotations

import random
import time

import pytest

from netsim import Address, DropReason, NatConfig, Network, TraceKind
from netsim.apps import Echo, Recorder, Reflector, parse_address


def pair(
    rng: random.Random, *, a: float = 0.0, b: float = 0.0, trace: bool = False
) -> tuple[Network, Recorder, Echo, Address]:
    net = Network(rng=rng, record_trace=trace)
    client, echo = Recorder(), Echo()
    net.add_host("a", "198.51.100.1", delay=a).bind(client, 5000)
    echo_address = net.add_host("b", "203.0.113.1", delay=b).bind(echo, 7)
    return net, client, echo, echo_address


def test_round_trip_takes_exactly_the_configured_rtt() -> None:
    net, client, _, echo = pair(random.Random(0), a=0.25, b=0.125)
    client.send_at(1.0, b"ping", echo)
    assert net.run_until(lambda: bool(client.received), timeout=10)
    assert client.received[0].time == 1.0 + 2 * (0.25 + 0.125)
    assert net.now == client.received[0].time  # stopped at the event that satisfied it


@pytest.mark.parametrize("rtt", [0.020, 0.100, 0.300])
def test_rtt_through_nats(rtt: float) -> None:
    # Client behind a NAT, server on the internet: four one-way legs of rtt/4 each way
    # split over host link and NAT link.
    net = Network(rng=random.Random(0))
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.port_restricted_cone(), delay=rtt / 8)
    client, echo = Recorder(), Echo()
    net.add_host("c", "10.0.0.2", behind=nat, delay=rtt / 8).bind(client, 5000)
    server = net.add_host("s", "203.0.113.1", delay=rtt / 4).bind(echo, 7)
    client.send(b"ping", server)
    assert net.run_until(lambda: bool(client.received), timeout=5)
    assert client.received[0].time == pytest.approx(rtt, abs=1e-12)


def test_jitter_stays_within_bounds_and_can_reorder() -> None:
    net = Network(rng=random.Random(3))
    sender, sink = Recorder(), Recorder()
    net.add_host("a", "198.51.100.1", delay=0.01, jitter=0.02).bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    for i in range(200):
        sender.send_at(i * 0.001, str(i).encode(), dst)
    net.run_for(5)
    order = [int(r.data) for r in sink.received]
    assert sorted(order) == list(range(200))
    assert order != sorted(order)  # jitter larger than the spacing reorders
    for r in sink.received:
        sent = int(r.data) * 0.001
        assert 0.01 <= r.time - sent <= 0.03


def test_loss_rate_matches_with_a_seeded_rng() -> None:
    net = Network(rng=random.Random(2024))
    sender, sink = Recorder(), Recorder()
    net.add_host("a", "198.51.100.1", loss=10).bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    for _ in range(10_000):
        sender.send(b"x", dst)
    net.run_for(1)
    lost = net.stats.dropped[DropReason.LOSS]
    assert lost + len(sink.received) == 10_000 == net.stats.sent
    assert 900 <= lost <= 1100  # 10% +- 1% (deterministic: the seed is fixed)
    assert net.stats.dropped_at["a", DropReason.LOSS] == lost
    assert net.stats.in_flight == 0


def test_loss_applies_per_link_crossing_on_nats_too() -> None:
    net = Network(rng=random.Random(5))
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.full_cone(), loss=50)
    sender, sink = Recorder(), Recorder()
    net.add_host("a", "10.0.0.2", behind=nat).bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    for _ in range(2000):
        sender.send(b"x", dst)
    net.run_for(1)
    assert net.stats.dropped_at["nat", DropReason.LOSS] == 2000 - len(sink.received)
    assert 900 <= len(sink.received) <= 1100


def scenario(seed: int) -> list[str]:
    """Lossy, jittery, symmetric-NAT traffic; the trace as text."""
    net = Network(rng=random.Random(seed), record_trace=True)
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.symmetric(), delay=0.01, jitter=0.01)
    client = Recorder()
    net.add_host("c", "10.0.0.2", behind=nat, loss=20, jitter=0.005).bind(client, 5000)
    s = net.add_host("s", "203.0.113.1", extra_ips=["203.0.113.2"], delay=0.02)
    for ip in s.ips:
        for port in (3478, 3479):
            s.bind(Echo(), port, ip=ip)
    for i in range(100):
        client.send_at(i * 0.003, b"%d" % i, (s.ips[i % 2], 3478 + (i // 2) % 2))
    net.run_for(2)
    return [str(e) for e in net.trace]


def test_same_seed_same_trace() -> None:
    first = scenario(11)
    assert first == scenario(11)
    assert first != scenario(12)
    kinds = {line.split()[2] for line in first}
    assert {"send", "nat-out", "nat-in", "deliver", "drop"} <= kinds


@pytest.mark.parametrize("cgn_kind", ["full-cone", "symmetric"])
def test_carrier_grade_nat(cgn_kind: str) -> None:
    net = Network(rng=random.Random(0))
    config = NatConfig.full_cone if cgn_kind == "full-cone" else NatConfig.symmetric
    cgn = net.add_nat("cgn", "198.51.100.1", config(hairpin=True), delay=0.005)
    homes = [
        net.add_nat(f"home{i}", f"100.64.0.{i + 2}", NatConfig.full_cone(), behind=cgn)
        for i in range(2)
    ]
    apps = [Recorder(), Recorder()]
    for i, (home, app) in enumerate(zip(homes, apps, strict=True)):
        net.add_host(f"h{i}", "192.168.1.2", behind=home).bind(app, 5000)  # same LAN IPs
    reflector = Reflector()
    server = net.add_host("s", "203.0.113.1").bind(reflector, 3478)
    for app in apps:
        app.send(b"whoami", server)
    net.run_for(1)
    publics = [parse_address(app.received[0].data) for app in apps]
    assert [p[0] for p in publics] == ["198.51.100.1"] * 2  # the CGN's address
    assert publics[0] != publics[1]
    assert [b.internal for b in homes[0].bindings()] == [("192.168.1.2", 5000)]
    assert sorted(b.internal for b in cgn.bindings()) == [
        ("100.64.0.2", 5000),
        ("100.64.0.3", 5000),
    ]
    # Customers of one CGN reach each other's CGN mapping only by hairpinning at the CGN;
    # a symmetric CGN's filtering admits only the endpoint each one sent to.
    apps[0].send(b"hi 1", publics[1])
    net.run_for(1)
    if cgn_kind == "full-cone":
        assert apps[1].received[-1].data == b"hi 1"
        assert apps[1].received[-1].source == publics[0]
    else:
        assert net.stats.dropped_at["cgn", DropReason.FILTERED] == 1


def test_timers_fire_at_their_time_and_run_until_times_out() -> None:
    net = Network(rng=random.Random(0))
    app = Recorder()
    net.add_host("a", "198.51.100.1").bind(app, 5000)
    sink = Recorder()
    dst = net.add_host("b", "203.0.113.1", delay=0.5).bind(sink, 7)
    app.send_at(3.0, b"late", dst)
    assert not net.run_until(lambda: bool(sink.received), timeout=3.25)
    assert net.now == 3.25
    assert net.run_until(lambda: bool(sink.received), timeout=10)
    assert net.now == 3.5 and sink.received[0].time == 3.5


def test_call_at_and_events_at_one_instant_keep_their_order() -> None:
    net = Network(rng=random.Random(0))
    app, sink = Recorder(), Recorder()
    net.add_host("a", "198.51.100.1").bind(app, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    for i in range(5):
        net.call_at(1.0, lambda i=i: app.send(b"%d" % i, dst))  # type: ignore[misc]
    net.run_for(2)
    assert sink.payloads() == [b"0", b"1", b"2", b"3", b"4"]
    assert {r.time for r in sink.received} == {1.0}


class Pair:
    """One object answering on two sockets: a request to socket 0 is answered from
    socket 1 (like a STUN CHANGE-REQUEST)."""

    def __init__(self) -> None:
        self.outbox: list[list[tuple[bytes, Address]]] = [[], []]

    def socket(self, index: int) -> _Side:
        return _Side(self, index)


class _Side:
    def __init__(self, pair: Pair, index: int) -> None:
        self.pair, self.index = pair, index

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.pair.outbox[1 - self.index].append((b"from the other socket", source))

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.pair.outbox[self.index] = self.pair.outbox[self.index], []
        return out


def test_apps_on_one_host_can_send_for_each_other() -> None:
    net = Network(rng=random.Random(0))
    shared = Pair()
    host = net.add_host("s", "203.0.113.1")
    first = host.bind(shared.socket(0), 3478)
    second = host.bind(shared.socket(1), 3479)
    client = Recorder()
    net.add_host("c", "198.51.100.1").bind(client, 5000)
    client.send(b"please change port", first)
    net.run_for(1)
    assert client.sources() == [second]


def test_port_unreachable_unbind_and_ephemeral_ports() -> None:
    net = Network(rng=random.Random(0))
    host = net.add_host("a", "198.51.100.1")
    a, b = Recorder(), Recorder()
    assert host.bind(a) == ("198.51.100.1", 49152)
    assert host.bind(b) == ("198.51.100.1", 49153)
    net.unbind(b)
    a.send(b"x", ("198.51.100.1", 49153))
    net.run_for(1)
    assert net.stats.dropped[DropReason.PORT_UNREACHABLE] == 1
    with pytest.raises(ValueError):
        host.bind(a, 1)  # one app object per socket
    with pytest.raises(ValueError):
        net.add_host("x", "198.51.100.1")  # address in use


class Stuck(Recorder):
    def get_timer(self) -> float | None:
        return 0.0  # never cleared: a bug


def test_a_timer_that_never_advances_is_reported() -> None:
    net = Network(rng=random.Random(0))
    net.add_host("a", "198.51.100.1").bind(Stuck(), 5000)
    with pytest.raises(RuntimeError, match="never advances"):
        net.run_for(1)


def test_trace_records_translation() -> None:
    net = Network(rng=random.Random(0), record_trace=True)
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.full_cone())
    app = Recorder()
    net.add_host("c", "10.0.0.2", behind=nat).bind(app, 5000)
    server = net.add_host("s", "203.0.113.1").bind(Echo(), 7)
    app.send(b"x", server)
    net.run_for(1)
    assert [(e.kind, e.where, e.src, e.dst) for e in net.trace] == [
        (TraceKind.SEND, "c", ("10.0.0.2", 5000), server),
        (TraceKind.NAT_OUT, "nat", ("198.51.100.1", 5000), server),
        (TraceKind.DELIVER, "s", ("198.51.100.1", 5000), server),
        (TraceKind.SEND, "s", server, ("198.51.100.1", 5000)),
        (TraceKind.NAT_IN, "nat", server, ("10.0.0.2", 5000)),
        (TraceKind.DELIVER, "c", server, ("10.0.0.2", 5000)),
    ]


def test_ten_thousand_datagrams_well_under_a_second() -> None:
    net = Network(rng=random.Random(0))
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.port_restricted_cone(), delay=0.01)
    client = Recorder()
    net.add_host("c", "10.0.0.2", behind=nat, delay=0.001, jitter=0.001, loss=1).bind(client, 5000)
    server = net.add_host("s", "203.0.113.1", delay=0.02).bind(Echo(), 7)
    for i in range(5000):
        client.send_at(i * 0.0001, b"x", server)
    start = time.perf_counter()  # wall clock only to measure the simulator itself
    net.run_for(10)
    elapsed = time.perf_counter() - start
    assert net.stats.sent >= 9900  # 5000 out, ~4950 echoed
    assert elapsed < 1.0, elapsed


def test_package_docstring_example() -> None:
    import doctest

    import netsim

    assert doctest.testmod(netsim, raise_on_error=True).failed == 0


def test_change_public_ip_to_the_same_address_just_flushes() -> None:
    net = Network(rng=random.Random(0))
    nat = net.add_nat("nat", "198.51.100.1", NatConfig.full_cone())
    app = Recorder()
    net.add_host("c", "10.0.0.2", behind=nat).bind(app, 5000)
    app.send(b"x", ("203.0.113.1", 7))
    net.run_for(1)
    assert len(nat.bindings()) == 1
    nat.change_public_ip("198.51.100.1")
    assert nat.bindings() == []
