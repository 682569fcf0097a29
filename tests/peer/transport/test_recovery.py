"""Loss detection, PTO and the congestion response of ``Recovery`` (RFC 9002), in virtual
time. Tokens are the packet numbers themselves, so what comes back is easy to name."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import LocalProtocolError
from peer.transport.congestion import CongestionKind
from peer.transport.recovery import Recovery, RecoveryConfig, RttEstimator

MSS = 1200
# Every loss counts (RFC 9002), and Reno's halving is easy to predict.
STRICT = RecoveryConfig(congestion=CongestionKind.RENO, loss_tolerance=0)


def _send(
    recovery: Recovery,
    numbers: range | list[int],
    now: float,
    *,
    size: int = MSS,
    eliciting: bool = True,
) -> None:
    for number in numbers:
        recovery.on_packet_sent(
            number, size, now, ack_eliciting=eliciting, in_flight=eliciting, token=number
        )


def _pto(recovery: Recovery) -> float:
    rtt, config = recovery.rtt, recovery.config
    return rtt.smoothed_rtt + max(4 * rtt.rttvar, config.granularity) + config.max_ack_delay


# ---------------------------------------------------------------------- RTT estimator


def test_first_rtt_sample_sets_every_estimate() -> None:
    rtt = RttEstimator(0.333)
    assert not rtt.has_sample and rtt.smoothed_rtt == 0.333 and rtt.rttvar == 0.333 / 2
    rtt.update(0.08, ack_delay=0.02, max_ack_delay=0.025)  # (the first ignores the delay)
    assert rtt.has_sample
    assert rtt.latest_rtt == rtt.min_rtt == rtt.smoothed_rtt == 0.08
    assert rtt.rttvar == 0.04


def test_later_rtt_samples_follow_the_rfc_formulas() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, 0.025)
    smoothed, rttvar = rtt.smoothed_rtt, rtt.rttvar
    rtt.update(0.2, ack_delay=0.01, max_ack_delay=0.025)
    adjusted = 0.2 - 0.01  # latest >= min_rtt + ack_delay: the delay is subtracted
    assert rtt.rttvar == pytest.approx(0.75 * rttvar + 0.25 * abs(smoothed - adjusted))
    assert rtt.smoothed_rtt == pytest.approx(0.875 * smoothed + 0.125 * adjusted)
    assert rtt.latest_rtt == 0.2 and rtt.min_rtt == 0.1


def test_ack_delay_is_clamped_and_never_takes_the_sample_below_min_rtt() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, 0.025)
    rtt.update(0.3, ack_delay=0.5, max_ack_delay=0.025)  # claims more than promised
    assert rtt.adjusted_rtt == pytest.approx(0.3 - 0.025)
    rtt.update(0.11, ack_delay=0.02, max_ack_delay=0.025)  # 0.11 < min_rtt + 0.02
    assert rtt.adjusted_rtt == 0.11
    rtt.update(0.05, ack_delay=0.02, max_ack_delay=0.025)
    assert rtt.min_rtt == 0.05  # min_rtt is the raw sample, delay or not


def test_rtt_sample_only_when_the_largest_is_newly_acknowledged() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(3), 0.0)
    recovery.on_ack_received([(2, 2)], 0.0, 0.05)
    assert recovery.rtt.latest_rtt == pytest.approx(0.05)
    recovery.on_ack_received([(2, 2), (0, 0)], 0.0, 0.2)  # largest not new: no sample
    assert recovery.rtt.latest_rtt == pytest.approx(0.05)
    # An ACK of only non-ack-eliciting packets gives no sample either.
    _send(recovery, [3], 0.2, eliciting=False)
    recovery.on_ack_received([(3, 3)], 0.0, 0.9)
    assert recovery.rtt.latest_rtt == pytest.approx(0.05)


# ---------------------------------------------------------------------- acknowledgements


def test_ack_ranges_return_the_tokens_in_number_order_and_ignore_duplicates() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(10), 0.0)
    assert recovery.bytes_in_flight == 10 * MSS
    acked, lost = recovery.on_ack_received([(5, 6), (1, 2)], 0.0, 0.01)
    assert acked == [1, 2, 5, 6]
    assert lost == [0, 3]  # 6 >= 3 + packet threshold 3; not 4 (6 < 4 + 3)
    assert recovery.bytes_in_flight == 4 * MSS
    assert recovery.on_ack_received([(5, 6), (1, 2)], 0.0, 0.02) == ([], [])
    # Numbers never sent (and a range reaching far beyond) are ignored, not looped over.
    acked, _ = recovery.on_ack_received([(9, 10**18), (4, 4)], 0.0, 0.03)
    assert acked == [4, 9]
    assert recovery.largest_acked == 9
    assert recovery.on_ack_received([], 0.0, 0.04) == ([], [])


def test_packet_threshold_declares_a_packet_lost_three_behind_an_acknowledged_one() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(5), 0.0)
    assert recovery.on_ack_received([(3, 3)], 0.0, 0.01) == ([3], [0])
    assert recovery.on_ack_received([(4, 4)], 0.0, 0.02) == ([4], [1])
    # Packet 2 is left for the time threshold: the loss timer is armed for it.
    rtt = recovery.rtt
    assert recovery.get_timer() == pytest.approx(
        0.0 + 9 / 8 * max(rtt.latest_rtt, rtt.smoothed_rtt)
    )


def test_time_threshold_loss_through_the_loss_timer() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, [0], 0.0)
    _send(recovery, [1], 0.001)
    assert recovery.on_ack_received([(1, 1)], 0.0, 0.1) == ([1], [])
    deadline = recovery.get_timer()
    assert deadline == pytest.approx(0.0 + 9 / 8 * 0.099)
    assert deadline is not None
    assert recovery.on_timer(deadline - 0.001) == ([], 0)  # early: nothing
    assert recovery.on_timer(deadline) == ([0], 0)
    assert recovery.bytes_in_flight == 0 and recovery.get_timer() is None


def test_pto_fires_backs_off_doubling_and_asks_for_probes() -> None:
    recovery = Recovery(replace(STRICT, max_pto_interval=60.0))
    _send(recovery, [0], 0.0)
    pto = _pto(recovery)
    assert recovery.get_timer() == pytest.approx(pto)
    assert recovery.on_timer(pto - 0.01) == ([], 0)
    assert recovery.on_timer(pto) == ([], 2)  # nothing declared lost, two probes
    assert recovery.pto_count == 1
    assert recovery.get_timer() == pytest.approx(2 * pto)  # from the last eliciting send
    _send(recovery, [1], pto)  # the probe
    assert recovery.get_timer() == pytest.approx(pto + 2 * pto)
    assert recovery.on_timer(3 * pto) == ([], 2)
    assert recovery.pto_count == 2
    assert recovery.get_timer() == pytest.approx(pto + 4 * pto)
    recovery.on_ack_received([(1, 1)], 0.0, 3.5 * pto)  # an acknowledgement resets it
    assert recovery.pto_count == 0


def test_pto_backoff_stops_at_max_pto_interval_so_a_stall_gets_probed_often() -> None:
    recovery = Recovery(replace(STRICT, max_pto_interval=1.0))
    _send(recovery, [0], 0.0)
    pto = _pto(recovery)
    assert pto < 1.0 < 4 * pto  # (the cap bites at the third timeout)
    fired, number = [], 1
    while (deadline := recovery.get_timer()) is not None and deadline < 8.0:
        assert recovery.on_timer(deadline) == ([], 2)
        fired.append(deadline)
        _send(recovery, [number], deadline)  # the probe, lost too
        number += 1
    gaps = [later - earlier for earlier, later in zip([0.0, *fired], fired, strict=False)]
    assert gaps[:2] == [pytest.approx(pto), pytest.approx(2 * pto)]
    assert all(gap == pytest.approx(1.0) for gap in gaps[2:]) and len(gaps) >= 8


def test_a_base_timeout_longer_than_the_cap_is_kept() -> None:
    recovery = Recovery(replace(STRICT, max_pto_interval=0.01))
    _send(recovery, [0], 0.0)
    pto = _pto(recovery)
    assert pto > 0.01 and recovery.get_timer() == pytest.approx(pto)


def test_no_timer_without_ack_eliciting_packets_in_flight() -> None:
    recovery = Recovery(STRICT)
    assert recovery.get_timer() is None
    _send(recovery, range(3), 0.0, eliciting=False)
    assert recovery.get_timer() is None and recovery.bytes_in_flight == 0
    assert recovery.on_timer(100.0) == ([], 0)


def test_packet_numbers_must_increase() -> None:
    recovery = Recovery()
    _send(recovery, [5], 0.0)
    with pytest.raises(LocalProtocolError, match="not above 5"):
        _send(recovery, [5], 0.0)


# ---------------------------------------------------------------------- congestion


def test_window_limits_sending() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(9), 0.0)
    assert recovery.can_send(MSS)
    _send(recovery, [9], 0.0)
    assert recovery.bytes_in_flight == recovery.congestion_window
    assert not recovery.can_send(1)


def test_losses_reduce_the_window_once_per_recovery_period() -> None:
    recovery = Recovery(STRICT)
    initial = recovery.congestion_window
    # Small packets: never window-limited, so acknowledgements do not grow the window.
    _send(recovery, range(20), 0.0, size=100)
    assert recovery.on_ack_received([(5, 7)], 0.0, 0.1)[1] == [0, 1, 2, 3, 4]
    assert recovery.congestion_window == initial // 2
    # More losses of packets sent before that reduction: the same congestion event.
    assert recovery.on_ack_received([(10, 12)], 0.0, 0.11)[1] == [8, 9]
    assert recovery.congestion_window == initial // 2
    # A loss of a packet sent after it is a new event.
    _send(recovery, range(20, 26), 0.12, size=100)
    lost = recovery.on_ack_received([(25, 25)], 0.0, 0.2)[1]
    assert lost[-1] == 22
    assert recovery.congestion_window == initial // 4


def test_random_loss_without_a_queue_is_not_congestion_by_default() -> None:
    for config, reduced in ((RecoveryConfig(), False), (STRICT, True)):
        recovery = Recovery(config)
        initial = recovery.congestion_window
        _send(recovery, range(40), 0.0, size=100)
        # One loss in forty, and an RTT that shows no queue.
        acked, lost = recovery.on_ack_received([(4, 39), (0, 2)], 0.0, 0.05)
        assert lost == [3] and len(acked) == 39
        assert (recovery.congestion_window < initial) is reduced


def _lossy_round(recovery: Recovery, first: int, now: float, lost_every: int) -> int:
    """Send 100 packets from ``first`` at ``now``, acknowledge them 50 ms later but for
    every ``lost_every``-th (never among the last three, so all are found lost at once);
    no queue: every round trip takes 50 ms. Returns the next packet number."""
    numbers = range(first, first + 100)
    _send(recovery, numbers, now, size=100)
    lost = {n for n in numbers if (n - first) % lost_every == 1}
    ranges: list[tuple[int, int]] = []
    for number in numbers:
        if number in lost:
            continue
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    recovery.on_ack_received(list(reversed(ranges)), 0.0, now + 0.05)
    return first + 100


def test_a_loss_rate_the_path_always_had_is_not_congestion() -> None:
    recovery = Recovery(RecoveryConfig())
    number, now = 0, 0.0
    # 17% lost every round trip, with no queue: over loss_tolerance at first...
    for _ in range(30):
        number = _lossy_round(recovery, number, now, lost_every=6)
        now += 0.06
    assert 0.12 < recovery.loss_rate < 0.2
    # ... then usual: the window stops shrinking.
    settled = recovery.congestion_window
    for _ in range(10):
        number = _lossy_round(recovery, number, now, lost_every=6)
        now += 0.06
    assert recovery.congestion_window >= settled
    # Half the packets lost in one round trip is more than the path ever did: congestion.
    before = recovery.congestion_window
    _lossy_round(recovery, number, now, lost_every=2)
    assert recovery.congestion_window < before


def test_a_few_losses_in_a_small_window_are_not_a_rate() -> None:
    for minimum, reduced in ((4, False), (1, True)):
        config = RecoveryConfig(
            congestion=CongestionKind.RENO, loss_tolerance=0.05, loss_min_packets=minimum
        )
        recovery = Recovery(config)
        _send(recovery, range(10), 0.0, size=100)
        initial = recovery.congestion_window
        # Two lost of ten: over loss_tolerance even of the 32 packets a rate is counted
        # over at least, but fewer than loss_min_packets.
        _, lost = recovery.on_ack_received([(9, 9), (7, 7), (5, 5), (0, 3)], 0.0, 0.05)
        assert lost == [4, 6]
        assert (recovery.congestion_window < initial) is reduced


def test_acknowledgements_grow_the_window_only_when_it_was_the_limit() -> None:
    # Application-limited: one packet per round trip never proves a larger window.
    recovery = Recovery(STRICT)
    initial = recovery.congestion_window
    now = 0.0
    for number in range(50):
        _send(recovery, [number], now)
        now += 0.05
        recovery.on_ack_received([(number, number)], 0.0, now)
    assert recovery.congestion_window == initial
    # Window-limited: a full window acknowledged grows it (slow start).
    _send(recovery, range(50, 60), now)
    recovery.on_ack_received([(50, 59)], 0.0, now + 0.05)
    # Only packets sent with at least half the window in flight count: 54 to 59.
    assert recovery.congestion_window == initial + 6 * MSS


def test_slow_start_ends_as_the_queue_forms_not_when_it_overflows() -> None:
    # A paced sender, a bottleneck of 1,000 datagrams a second behind 50 ms of propagation
    # (a BDP of 50 datagrams) with an unbounded queue, every packet acknowledged on its
    # own: HyStart++ sees the round trip grow and slows the doubling (CSS) while the queue
    # holds a few milliseconds, once, then moves on to congestion avoidance, lossless.
    recovery = Recovery(STRICT)
    rate, base = 1000.0, 0.05
    acks: list[tuple[float, int]] = []  # (when its ACK comes back, number)
    free_at = now = 0.0
    number = 0
    entered: list[tuple[float, int]] = []  # (queueing delay, window) when CSS began
    while recovery.ssthresh == math.inf:
        at = recovery.send_time(now) if recovery.can_send(MSS) else math.inf
        if not acks or at <= acks[0][0]:
            now = max(now, at)
            free_at = max(free_at, now) + 1 / rate
            _send(recovery, [number], now)
            acks.append((free_at + base, number))
            number += 1
            continue
        was = recovery.in_css
        now, acked = acks.pop(0)
        assert recovery.on_ack_received([(acked, acked)], 0.0, now)[1] == []
        if recovery.in_css and not was:
            entered.append((recovery.rtt.latest_rtt - base, recovery.congestion_window))
        assert now < 10, "slow start never ended"
    assert len(entered) == 1  # no going back and forth
    queue, window = entered[0]
    # An eighth of 50 ms, plus the eight samples in a row it takes (a datagram of queue,
    # a millisecond, more each): well under the 50 ms a queue of one BDP would add.
    assert 0.00625 <= queue < 0.016
    # Then a quarter of slow start's growth for five rounds: at most 1.25 ** 5 as much.
    assert window < recovery.congestion_window < window * 1.25**5
    assert not recovery.in_css and recovery.ssthresh == recovery.congestion_window


def test_persistent_congestion_collapses_the_window() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, [0], 0.0)
    recovery.on_ack_received([(0, 0)], 0.0, 0.05)  # the RTT sample it needs first
    for number in range(1, 11):
        _send(recovery, [number], number / 10)
    _send(recovery, [11], 1.0)
    lost = recovery.on_ack_received([(11, 11)], 0.0, 1.05)[1]
    # 1 to 9 lost, none acknowledged between, spanning 0.8 s > 3 PTOs.
    assert lost == list(range(1, 10))
    assert _pto(recovery) * 3 < 0.8
    assert recovery.congestion_window == STRICT.minimum_window_packets * MSS


def test_no_persistent_congestion_when_a_packet_between_was_acknowledged() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, [0], 0.0)
    recovery.on_ack_received([(0, 0)], 0.0, 0.05)
    for number in range(1, 11):  # (small: never window-limited, no growth to predict)
        _send(recovery, [number], number / 10, size=100)
    _send(recovery, [11], 1.0, size=100)
    assert recovery.on_ack_received([(5, 5)], 0.0, 0.55)[1] == [1, 2, 3, 4]
    assert recovery.on_ack_received([(11, 11)], 0.0, 1.05)[1] == [6, 7, 8, 9]
    # Each run spans 0.3 s, short of 3 PTOs; together (were 5 not acked) they would not be.
    assert 0.3 < 3 * _pto(recovery) < 0.8
    # Two congestion events (the second's losses were sent after the first), no collapse.
    assert recovery.congestion_window == STRICT.initial_window_packets * MSS // 4
    assert recovery.congestion_window > STRICT.minimum_window_packets * MSS


def test_persistent_congestion_runs_across_loss_batches() -> None:
    recovery = Recovery(RecoveryConfig(congestion=CongestionKind.RENO, packet_threshold=100))
    _send(recovery, [0], 0.0)
    recovery.on_ack_received([(0, 0)], 0.0, 0.05)
    _send(recovery, [1], 0.1)
    _send(recovery, [2], 0.3)
    _send(recovery, [3], 0.76)
    _send(recovery, [4], 0.76)
    assert recovery.on_ack_received([(4, 4)], 0.0, 0.8)[1] == [1, 2]  # 0.2 s: not yet
    assert recovery.congestion_window > STRICT.minimum_window_packets * MSS
    deadline = recovery.get_timer()
    assert deadline is not None
    assert recovery.on_timer(deadline) == ([3], 0)  # 1 to 3: 0.66 s, nothing acked between
    assert recovery.congestion_window == STRICT.minimum_window_packets * MSS


def test_losses_before_the_first_rtt_sample_are_not_persistent_congestion() -> None:
    recovery = Recovery(STRICT)
    for number in range(10):
        _send(recovery, [number], number / 10, size=100)
    assert recovery.on_ack_received([(9, 9)], 0.0, 0.95)[1] == list(range(9))
    assert recovery.congestion_window == STRICT.initial_window_packets * MSS // 2


# ---------------------------------------------------------------------- pacing, paths


def test_pacing_spaces_full_size_packets_over_the_round_trip() -> None:
    recovery = Recovery(STRICT)
    now = 0.0
    while recovery.send_time(now) <= now:  # the initial burst
        _send(recovery, [recovery.largest_sent + 1], now)
    start, packets = now, 50
    for _ in range(packets):
        now = recovery.send_time(now)
        _send(recovery, [recovery.largest_sent + 1], now)
    expected = recovery.rtt.smoothed_rtt / recovery.congestion_window * MSS / 1.25
    assert (now - start) / packets == pytest.approx(expected, rel=0.03)
    unpaced = Recovery(RecoveryConfig(pacing=False))
    _send(unpaced, range(100), 0.0)
    assert unpaced.send_time(0.0) == 0.0


def test_path_change_returns_everything_in_flight_and_starts_over() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(20), 0.0, size=100)
    recovery.on_ack_received([(5, 7)], 0.0, 0.03)
    _send(recovery, [20], 0.04, eliciting=False)
    assert recovery.congestion_window < STRICT.initial_window_packets * MSS
    assert recovery.on_path_changed(0.05) == [*range(8, 20), 20]
    assert recovery.bytes_in_flight == 0 and recovery.get_timer() is None
    assert not recovery.rtt.has_sample and recovery.rtt.smoothed_rtt == STRICT.initial_rtt
    assert recovery.congestion_window == STRICT.initial_window_packets * MSS
    assert recovery.ssthresh == math.inf
    assert recovery.on_ack_received([(19, 0)], 0.0, 0.06) == ([], [])
    _send(recovery, [21], 0.07)  # numbering goes on
    assert recovery.on_ack_received([(21, 21)], 0.0, 0.1) == ([21], [])


def test_discard_forgets_everything() -> None:
    recovery = Recovery(STRICT)
    _send(recovery, range(5), 0.0)
    recovery.discard()
    assert recovery.bytes_in_flight == 0 and recovery.get_timer() is None
    assert recovery.on_ack_received([(4, 0)], 0.0, 0.1) == ([], [])
    assert recovery.on_timer(10.0) == ([], 0)


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_datagram_size": 100}, "max_datagram_size"),
        ({"initial_rtt": 0}, "initial_rtt"),
        ({"initial_rtt": math.nan}, "initial_rtt"),
        ({"max_ack_delay": -1}, "max_ack_delay"),
        ({"packet_threshold": 0}, "packet_threshold"),
        ({"time_threshold": 0.5}, "time_threshold"),
        ({"granularity": 0}, "granularity"),
        ({"initial_window_packets": 0}, "initial_window_packets"),
        ({"minimum_window_packets": 11}, "minimum_window_packets"),
        ({"persistent_congestion_threshold": 0}, "persistent_congestion_threshold"),
        ({"persistent_congestion_threshold": 2.5}, "persistent_congestion_threshold"),
        ({"congestion": "cubic"}, "CongestionKind"),
        ({"probes": 3}, "probes"),
        ({"loss_tolerance": 1.0}, "loss_tolerance"),
        ({"queue_delay": -0.1}, "queue_delay"),
    ],
)
def test_invalid_configuration_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        RecoveryConfig(**change)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- property


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 6), st.booleans(), st.integers(50, 1500)),
        st.tuples(st.just("ack"), st.sets(st.integers(0, 80), max_size=12)),
        st.tuples(st.just("timer")),
        st.tuples(st.just("path")),
    ),
    max_size=40,
)


def _ranges(numbers: set[int]) -> list[tuple[int, int]]:
    """Inclusive ranges, largest first, as an ACK frame carries them."""
    ranges: list[tuple[int, int]] = []
    for number in sorted(numbers, reverse=True):
        if ranges and ranges[-1][0] == number + 1:
            ranges[-1] = (number, ranges[-1][1])
        else:
            ranges.append((number, number))
    return ranges


def _numbers(tokens: list[object]) -> list[int]:
    numbers = [token for token in tokens if isinstance(token, int)]
    assert len(numbers) == len(tokens)
    return numbers


@given(_STEPS, st.sampled_from(list(CongestionKind)))
def test_every_packet_is_acked_lost_or_in_flight_exactly_once(
    steps: list[tuple[object, ...]], kind: CongestionKind
) -> None:
    recovery = Recovery(RecoveryConfig(congestion=kind))
    sizes: dict[int, tuple[int, bool]] = {}
    outcomes: list[int] = []
    now, number = 0.0, 0
    for step in steps:
        now += 0.013
        if step[0] == "send":
            _, count, eliciting, size = step
            assert isinstance(count, int) and isinstance(size, int)
            for _ in range(count):
                _send(recovery, [number], now, size=size, eliciting=bool(eliciting))
                sizes[number] = (size, bool(eliciting))
                number += 1
        elif step[0] == "ack":
            acked_numbers = step[1]
            assert isinstance(acked_numbers, set)
            acked_tokens, lost_tokens = recovery.on_ack_received(_ranges(acked_numbers), 0.001, now)
            acked, lost = _numbers(acked_tokens), _numbers(lost_tokens)
            assert acked == sorted(acked) and lost == sorted(lost)
            assert set(acked) <= acked_numbers
            outcomes += acked + lost
        elif step[0] == "timer":
            deadline = recovery.get_timer()
            if deadline is not None:
                now = max(now, deadline)
                lost_tokens, probes = recovery.on_timer(now)
                lost = _numbers(lost_tokens)
                assert lost == sorted(lost) and probes in (0, 2)
                outcomes += lost
        else:
            outcomes += _numbers(recovery.on_path_changed(now))
        assert len(outcomes) == len(set(outcomes))  # never reported twice
        in_flight = set(sizes) - set(outcomes)
        assert recovery.bytes_in_flight == sum(sizes[n][0] for n in in_flight if sizes[n][1])
        if any(sizes[n][1] for n in in_flight):  # (a loss timer may run for ACK-only ones)
            assert recovery.get_timer() is not None
        assert recovery.congestion_window >= recovery.config.minimum_window_packets * MSS
    assert set(outcomes) <= set(sizes)
