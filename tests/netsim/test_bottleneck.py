"""The bottleneck link (netsim.link): serialisation, FIFO queueing, drop-tail, random loss,
delay and utilisation, alone and on a node's link in a Network."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from netsim import BottleneckLink, DropReason, LinkConfig, NatConfig, Network
from netsim.apps import Recorder

MBIT = 1e6


def bottleneck(seed: int = 0, **config: float | int | None) -> BottleneckLink:
    return BottleneckLink(LinkConfig(**config), rng=random.Random(seed))  # type: ignore[arg-type]


# -- the link alone -------------------------------------------------------------------------


def test_a_1500_byte_packet_at_12_mbit_takes_one_millisecond() -> None:
    link = bottleneck(rate_bps=12 * MBIT)
    assert link.config.serialisation(1500) == pytest.approx(0.001, rel=1e-12)
    assert link.offer(1500, now=2.0) == pytest.approx(2.001, rel=1e-12)
    # Headers the caller does not count still take wire time.
    headers = bottleneck(rate_bps=12 * MBIT, overhead_bytes=28)
    assert headers.offer(1500, now=0.0) == pytest.approx(1528 * 8 / 12e6, rel=1e-12)
    assert headers.stats.offered_bytes == headers.stats.delivered_bytes == 1528


def test_no_rate_means_no_serialisation_and_no_queue() -> None:
    link = bottleneck(delay=0.25)
    assert [link.offer(10_000, now=1.0) for _ in range(3)] == [1.25] * 3
    assert link.queue_bytes(1.0) == 0 and link.stats.busy_time == 0
    assert link.utilisation(0, 2) == 0


def test_back_to_back_packets_leave_one_serialisation_time_apart() -> None:
    link = bottleneck(rate_bps=12 * MBIT)
    arrivals = [link.offer(1500, now=0.0) for _ in range(10)]
    assert arrivals == pytest.approx([0.001 * k for k in range(1, 11)], rel=1e-9)
    assert link.queue_bytes(0.0) == 15_000
    assert link.queue_bytes(0.0045) == 6 * 1500  # four fully sent; the fifth on the wire
    assert link.queue_bytes(0.0101) == 0
    # Once drained, a packet starts when it is offered, not where the last one ended.
    later = link.offer(1500, now=0.5)
    assert later == pytest.approx(0.501, rel=1e-12)
    # A packet offered while another is on the wire waits for it (FIFO, no preemption).
    assert link.offer(150, now=0.5005) == pytest.approx(0.501 + 0.0001, rel=1e-9)


def test_drop_tail_at_the_queue_limit_and_drops_are_counted() -> None:
    link = bottleneck(rate_bps=12 * MBIT, queue_bytes=15_000)
    burst = [link.offer(1500, now=0.0) for _ in range(100)]
    admitted = [at for at in burst if at is not None]
    assert len(admitted) == 10 and burst[10:] == [None] * 90  # the tail is dropped
    assert link.stats.dropped_queue_packets == 90
    assert link.stats.dropped_queue_bytes == 90 * 1500
    assert link.stats.max_queue_bytes == 15_000
    # Offered at twice the rate for a second: the queue stays at the limit, never over.
    for k in range(2000):
        now = 0.0005 * k
        link.offer(1500, now)
        assert link.queue_bytes(now) <= 15_000
    stats = link.stats
    assert stats.max_queue_bytes == 15_000
    assert stats.offered_packets == 2100
    assert stats.delivered_packets + stats.dropped_queue_packets == stats.offered_packets
    assert 990 <= stats.delivered_packets <= 1011  # one per ms for 1 s, plus a full queue
    assert stats.dropped_loss_packets == 0


def test_a_packet_larger_than_the_queue_never_passes() -> None:
    link = bottleneck(rate_bps=MBIT, queue_bytes=1000)
    assert link.offer(1001, now=0.0) is None
    assert link.transmit(1001, now=0.0) is DropReason.QUEUE_FULL
    assert link.offer(1000, now=0.0) is not None


def test_random_loss_is_close_to_the_configured_rate_with_a_seeded_rng() -> None:
    link = bottleneck(seed=2024, loss=10)
    outcomes = [link.transmit(100, now=0.0) for _ in range(20_000)]
    lost = outcomes.count(DropReason.LOSS)
    assert lost == link.stats.dropped_loss_packets
    assert 1850 <= lost <= 2150  # 10% +- 3 sigma; deterministic since the seed is fixed
    assert link.stats.delivered_packets == 20_000 - lost
    again = bottleneck(seed=2024, loss=10)
    assert [again.transmit(100, now=0.0) for _ in range(20_000)] == outcomes


def test_a_packet_lost_on_the_wire_still_used_the_link() -> None:
    link = bottleneck(seed=1, rate_bps=12 * MBIT, loss=50)
    arrivals = [link.offer(1500, now=0.0) for _ in range(40)]
    kept = [(k, at) for k, at in enumerate(arrivals) if at is not None]
    assert 0 < len(kept) < 40
    for k, at in kept:  # each still leaves in its own slot: the lost ones took theirs
        assert at == pytest.approx(0.001 * (k + 1), rel=1e-9)
    assert link.stats.busy_time == pytest.approx(0.040, rel=1e-9)


def test_queueing_delay_is_the_wait_before_the_first_bit_goes() -> None:
    link = bottleneck(seed=1, rate_bps=12 * MBIT, queue_bytes=4500, loss=50, delay=0.5)
    assert link.stats.mean_queue_delay == 0  # (nothing admitted yet)
    for _ in range(5):  # 1 ms each: waits of 0, 1 and 2 ms, then two dropped at the tail
        link.transmit(1500, now=0.0)
    stats = link.stats
    assert stats.dropped_queue_packets == 2 and stats.admitted_packets == 3
    assert stats.delivered_packets < 3  # lost on the wire: it waited all the same
    assert stats.queue_delay_total == pytest.approx(0.003, rel=1e-9)
    assert stats.max_queue_delay == pytest.approx(0.002, rel=1e-9)
    assert stats.mean_queue_delay == pytest.approx(0.001, rel=1e-9)
    link.transmit(1500, now=1.0)  # an idle link: no wait
    assert stats.mean_queue_delay == pytest.approx(0.00075, rel=1e-9)
    unlimited = bottleneck(delay=0.1)  # no rate: never a queue
    for _ in range(3):
        unlimited.transmit(1500, now=0.0)
    assert unlimited.stats.admitted_packets == 3 and unlimited.stats.mean_queue_delay == 0


def test_propagation_delay_is_added_after_serialisation() -> None:
    link = bottleneck(rate_bps=12 * MBIT, delay=0.025)
    assert link.offer(1500, now=1.0) == pytest.approx(1.026, rel=1e-12)
    assert link.offer(1500, now=1.0) == pytest.approx(1.027, rel=1e-12)


def test_utilisation_of_a_saturated_idle_and_half_loaded_link() -> None:
    saturated = bottleneck(rate_bps=12 * MBIT, queue_bytes=30_000)
    for k in range(2000):
        saturated.offer(1500, now=0.0005 * k)  # twice the rate
    assert saturated.utilisation(0.0, 1.0) == pytest.approx(1.0, abs=1e-9)
    idle = bottleneck(rate_bps=12 * MBIT)
    assert idle.utilisation(0.0, 1.0) == 0
    half = bottleneck(rate_bps=12 * MBIT)
    for k in range(500):
        half.offer(1500, now=0.002 * k)  # one slot in two
    assert half.utilisation(0.0, 1.0) == pytest.approx(0.5, abs=1e-9)
    assert half.utilisation(0.0, 0.0005) == pytest.approx(1.0)  # inside the first packet
    assert half.utilisation(0.0012, 0.0018) == 0  # in a gap
    assert half.utilisation(5.0, 6.0) == 0  # after everything
    assert half.stats.busy_time == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match="end > start"):
        half.utilisation(1.0, 1.0)


def test_a_rate_change_mid_run_applies_to_later_packets() -> None:
    link = bottleneck(rate_bps=12 * MBIT)
    assert link.offer(1500, now=0.0) == pytest.approx(0.001)
    link.config = LinkConfig(rate_bps=1.2 * MBIT)
    assert link.offer(1500, now=0.0) == pytest.approx(0.011)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rate_bps": 0}, "rate_bps"),
        ({"rate_bps": float("inf")}, "rate_bps"),
        ({"rate_bps": float("nan")}, "rate_bps"),
        ({"queue_bytes": -1}, "queue_bytes"),
        ({"delay": -0.1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"loss": 101}, "loss"),
        ({"loss": -1}, "loss"),
        ({"overhead_bytes": -28}, "overhead_bytes"),
    ],
)
def test_bad_configs_are_refused_in_one_line(config: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        LinkConfig(**config)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


# -- on a node's link, in a network ------------------------------------------------------------


def test_a_burst_through_a_host_uplink_arrives_at_the_link_rate_and_the_rest_is_dropped() -> None:
    net = Network(rng=random.Random(0))
    sender, sink = Recorder(), Recorder()
    limit = LinkConfig(rate_bps=10 * MBIT, queue_bytes=50 * 1250, delay=0.01)
    host = net.add_host("a", "198.51.100.1", delay=0.002, uplink=limit)
    host.bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1", delay=0.003).bind(sink, 7)
    for k in range(1000):
        sender.send(b"%04d" % k + bytes(1246), dst)  # 1250 bytes: 1 ms at 10 Mbit/s
    net.run_for(2)
    assert [int(r.data[:4]) for r in sink.received] == list(range(50))  # FIFO, tail dropped
    times = [r.time for r in sink.received]
    # First: serialisation + bottleneck delay + both hosts' link delays.
    assert times[0] == pytest.approx(0.001 + 0.01 + 0.002 + 0.003, rel=1e-9)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.001] * 49, rel=1e-6)
    assert net.stats.dropped_at["a", DropReason.QUEUE_FULL] == 950
    assert host.uplink is not None and host.uplink.stats.max_queue_bytes == 50 * 1250
    assert net.stats.in_flight == 0


def test_a_sender_at_twice_the_link_rate_sees_the_link_rate_and_drops_beyond_the_queue() -> None:
    net = Network(rng=random.Random(0))
    sender, sink = Recorder(), Recorder()
    limit = LinkConfig(rate_bps=10 * MBIT, queue_bytes=50 * 1250, delay=0.02)
    host = net.add_host("a", "198.51.100.1", uplink=limit)
    host.bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    for k in range(1000):
        sender.send_at(0.0005 * k, bytes(1250), dst)  # 20 Mbit/s for half a second
    net.run_for(3)
    times = [r.time for r in sink.received]
    delivered_bytes = 1250 * (len(times) - 1)
    assert delivered_bytes * 8 / (times[-1] - times[0]) == pytest.approx(10 * MBIT, rel=1e-6)
    dropped = net.stats.dropped_at["a", DropReason.QUEUE_FULL]
    assert dropped + len(times) == 1000
    assert 540 <= len(times) <= 552  # 500 sent in the half second, plus about a full queue
    assert host.uplink is not None
    assert host.uplink.utilisation(0.0, 0.5) == pytest.approx(1.0, abs=0.01)


def test_two_flows_behind_one_nat_share_its_wan_bottleneck() -> None:
    net = Network(rng=random.Random(0))
    wan = LinkConfig(rate_bps=10 * MBIT, queue_bytes=20 * 1250, delay=0.01)
    nat = net.add_nat("home", "198.51.100.1", NatConfig.port_restricted_cone(), uplink=wan)
    senders = [Recorder(), Recorder()]
    for index, app in enumerate(senders):
        net.add_host(f"h{index}", f"10.0.0.{index + 2}", behind=nat).bind(app, 5000)
    sink = Recorder()
    dst = net.add_host("s", "203.0.113.1").bind(sink, 7)
    # Each at the link rate on average, at random times: strictly periodic senders in
    # lockstep would show drop-tail's phase effect (the first to send always gets the slot).
    times_rng = random.Random(3)
    for app in senders:
        for at in sorted(times_rng.uniform(0, 0.5) for _ in range(500)):
            app.send_at(at, bytes(1250), dst)
    net.run_for(3)
    times = [r.time for r in sink.received]
    assert (len(times) - 1) * 1250 * 8 / (times[-1] - times[0]) == pytest.approx(10 * MBIT)
    flows = Counter(r.source for r in sink.received)
    assert {ip for ip, _ in flows} == {"198.51.100.1"} and len(flows) == 2
    assert min(flows.values()) >= 0.4 * len(times)  # one queue, shared about evenly
    assert net.stats.dropped_at["home", DropReason.QUEUE_FULL] == 1000 - len(times)
    assert nat.uplink is not None and nat.uplink.stats.max_queue_bytes <= 20 * 1250


def test_directions_are_independent() -> None:
    net = Network(rng=random.Random(0))
    slow = LinkConfig(rate_bps=MBIT, queue_bytes=100_000)
    nat = net.add_nat("home", "198.51.100.1", NatConfig.full_cone(), downlink=slow)
    client, server = Recorder(), Recorder()
    client_address = net.add_host("c", "10.0.0.2", behind=nat).bind(client, 5000)
    server_address = net.add_host("s", "203.0.113.1").bind(server, 7)
    for _ in range(10):
        client.send(bytes(1250), server_address)  # outbound: no bottleneck
    net.run_for(1)
    assert {r.time for r in server.received} == {0.0}
    public = server.received[0].source
    for _ in range(10):
        server.send(bytes(1250), public)  # inbound through the 1 Mbit/s downlink: 10 ms each
    start = net.now
    net.run_for(1)
    assert [r.time - start for r in client.received] == pytest.approx(
        [0.01 * k for k in range(1, 11)], rel=1e-9
    )
    assert client_address == ("10.0.0.2", 5000)


def test_bottleneck_loss_and_removal_through_the_network() -> None:
    net = Network(rng=random.Random(7))
    sender, sink = Recorder(), Recorder()
    host = net.add_host("a", "198.51.100.1")
    host.bind(sender, 5000)
    dst = net.add_host("b", "203.0.113.1").bind(sink, 7)
    up, down = net.set_bottleneck(host, uplink=LinkConfig(loss=20))
    assert up is host.uplink and down is None and host.downlink is None
    for _ in range(5000):
        sender.send(b"x", dst)
    net.run_for(1)
    lost = net.stats.dropped_at["a", DropReason.LOSS]
    assert up is not None and lost == up.stats.dropped_loss_packets
    assert 900 <= lost <= 1100
    assert net.set_bottleneck(host) == (None, None)
    for _ in range(100):
        sender.send(b"x", dst)
    net.run_for(1)
    assert len(sink.received) == 5100 - lost
    other = Network(rng=random.Random(0))
    with pytest.raises(ValueError, match="another network"):
        other.set_bottleneck(host, uplink=LinkConfig())
