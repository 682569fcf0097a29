"""NewReno (RFC 9002 7.3), CUBIC (RFC 9438) and the pacer, driven directly in virtual time."""

from __future__ import annotations

import math

import pytest

from peer.transport.congestion import (
    CongestionKind,
    Cubic,
    NewReno,
    Pacer,
    make_congestion,
)
from peer.transport.recovery import RecoveryConfig

MSS = 1200
CONFIG = RecoveryConfig()
INITIAL = CONFIG.initial_window_packets * MSS
MINIMUM = CONFIG.minimum_window_packets * MSS


def _reno() -> NewReno:
    cc = make_congestion(CongestionKind.RENO, CONFIG)
    assert isinstance(cc, NewReno)
    return cc


def _cubic(packets: int = 100, rtt: float = 0.1) -> Cubic:
    """A CUBIC sender grown by slow start to ``packets`` datagrams."""
    cc = make_congestion(CongestionKind.CUBIC, CONFIG)
    assert isinstance(cc, Cubic)
    cc.on_packets_acked(packets * MSS - cc.congestion_window, 0.0, rtt)
    assert cc.congestion_window == packets * MSS
    return cc


def _ack_rounds(cc: Cubic, start: float, rtt: float, rounds: int) -> float:
    """Acknowledge a window per round trip, one datagram at a time, spread over the round
    trip (an ACK clock). Returns the time of the last acknowledgement."""
    now = start
    for _ in range(rounds):
        window = cc.congestion_window // MSS
        for _ in range(window):
            now += rtt / window
            cc.on_packets_acked(MSS, now, rtt)
    return now


def test_factory_builds_each_kind_with_the_configured_windows() -> None:
    reno = make_congestion(CongestionKind.RENO, CONFIG)
    cubic = make_congestion(CongestionKind.CUBIC, RecoveryConfig(initial_window_packets=4))
    assert type(reno) is NewReno and type(cubic) is Cubic
    assert reno.congestion_window == INITIAL and reno.minimum_window == MINIMUM
    assert cubic.congestion_window == 4 * MSS
    assert reno.ssthresh == math.inf == cubic.ssthresh


def test_new_reno_slow_start_grows_by_the_bytes_acknowledged() -> None:
    cc = _reno()
    cc.on_packets_acked(3 * MSS, 0.1, 0.1)
    assert cc.congestion_window == INITIAL + 3 * MSS
    cc.on_packets_acked(INITIAL + 3 * MSS, 0.2, 0.1)  # a whole window: doubled
    assert cc.congestion_window == 2 * (INITIAL + 3 * MSS)


def test_new_reno_halves_on_loss_then_adds_one_datagram_per_window() -> None:
    cc = _reno()
    cc.on_packets_acked(10 * MSS, 0.1, 0.1)
    before = cc.congestion_window
    cc.on_congestion_event(sent_time=0.15, now=0.2)
    assert cc.congestion_window == before // 2 == cc.ssthresh
    halved = cc.congestion_window
    # Congestion avoidance: a window's worth of acknowledged bytes adds one datagram.
    cc.on_packets_acked(halved - MSS, 0.3, 0.1)
    assert cc.congestion_window == halved
    cc.on_packets_acked(MSS, 0.3, 0.1)
    assert cc.congestion_window == halved + MSS


def test_one_reduction_per_recovery_period() -> None:
    for cc in (_reno(), _cubic()):
        cc.on_congestion_event(sent_time=0.5, now=1.0)
        reduced = cc.congestion_window
        cc.on_congestion_event(sent_time=0.9, now=1.05)  # sent before the reduction
        cc.on_congestion_event(sent_time=1.0, now=1.1)
        assert cc.congestion_window == reduced
        assert cc.in_recovery(1.0) and not cc.in_recovery(1.01)
        cc.on_congestion_event(sent_time=1.01, now=1.2)  # sent after it: a new loss
        assert cc.congestion_window == max(int(reduced * cc.beta), MINIMUM)


def test_window_never_below_the_minimum_and_persistent_congestion_collapses_it() -> None:
    cc = _reno()
    for i in range(10):
        cc.on_congestion_event(sent_time=float(2 * i + 1), now=float(2 * i + 2))
    assert cc.congestion_window == MINIMUM
    cc = _reno()
    cc.on_congestion_event(sent_time=0.1, now=0.2)
    cc.on_persistent_congestion()
    assert cc.congestion_window == MINIMUM
    # The recovery period is over too: the next loss reduces (floored at the minimum).
    assert not cc.in_recovery(0.15)
    cc.reset()
    assert cc.congestion_window == INITIAL and cc.ssthresh == math.inf


def test_cubic_reduces_by_beta_and_computes_k() -> None:
    cc = _cubic(100)
    cc.on_congestion_event(sent_time=0.5, now=1.0)
    assert cc.beta == 0.7 and cc.c == 0.4
    assert cc.congestion_window == int(100 * MSS * 0.7) == cc.ssthresh
    assert cc.w_max == 100
    # K = cbrt((W_max - cwnd_epoch) / C), RFC 9438 eq. 2
    assert cc.k == pytest.approx(math.cbrt((100 - 70) / 0.4))
    assert cc.w_cubic(0) == pytest.approx(70)
    assert cc.w_cubic(cc.k) == pytest.approx(100)


def test_cubic_window_follows_w_cubic_after_a_loss() -> None:
    rtt = 0.1
    cc = _cubic(100, rtt)
    cc.on_congestion_event(sent_time=0.5, now=1.0)
    k = cc.k
    # The stage starts at the first acknowledgement that may grow the window.
    epoch = 1.0 + rtt / 70
    checked = 0
    now = 1.0
    while now - epoch < k + 1.5:
        now = _ack_rounds(cc, now, rtt, 1)
        t = now - epoch
        window = cc.congestion_window / MSS
        # Each round trip aims at W_cubic one RTT ahead of its start, i.e. at about t.
        assert window == pytest.approx(cc.w_cubic(t), rel=0.02), t
        checked += 1
    assert checked > 40
    # Concave below W_max, flat near K, convex beyond.
    assert cc.w_cubic(k / 2) < 100 < cc.w_cubic(k + 1)
    assert cc.congestion_window / MSS > 100


def test_cubic_fast_convergence_lowers_w_max_when_losing_below_it() -> None:
    cc = _cubic(100)
    cc.on_congestion_event(sent_time=0.5, now=1.0)
    assert cc.w_max == 100
    window = cc.congestion_window / MSS  # 70, below the old maximum
    cc.on_congestion_event(sent_time=1.5, now=2.0)
    assert cc.w_max == pytest.approx(window * (1 + 0.7) / 2)
    assert cc.k == pytest.approx(math.cbrt((cc.w_max - window * 0.7) / 0.4), rel=1e-3)


def test_cubic_reno_friendly_region_on_a_short_round_trip() -> None:
    # Small window, short RTT: Reno's additive increase outruns the cubic curve (4.3).
    rtt = 0.002
    cc = _cubic(10, rtt)
    cc.on_congestion_event(sent_time=0.0, now=0.01)
    assert cc.congestion_window == 7 * MSS
    alpha = 3 * (1 - 0.7) / (1 + 0.7)
    now = _ack_rounds(cc, 0.01, rtt, 5)
    t = now - 0.01
    window = cc.congestion_window / MSS
    assert window > cc.w_cubic(t) + 0.5
    # W_est = cwnd_epoch + alpha * (datagrams acked) / cwnd per ack: about alpha per RTT.
    assert window == pytest.approx(7 + 5 * alpha, abs=0.3)


def test_cubic_starts_afresh_after_persistent_congestion() -> None:
    cc = _cubic(100)
    cc.on_congestion_event(sent_time=0.5, now=1.0)
    cc.on_persistent_congestion()
    assert cc.congestion_window == MINIMUM
    # Slow start up to ssthresh, then a stage with K = 0 and W_max = the window then.
    cc.on_packets_acked(int(cc.ssthresh) - MINIMUM, 1.5, 0.1)
    assert cc.congestion_window == cc.ssthresh
    cc.on_packets_acked(MSS, 1.6, 0.1)
    assert cc.k == 0 and cc.w_max == pytest.approx(cc.ssthresh / MSS)


def test_pacer_spaces_packets_at_the_rate_after_a_burst() -> None:
    cwnd, srtt = 40 * MSS, 0.05
    pacer = Pacer(max_datagram_size=MSS, granularity=0.001)
    pacer.update_rate(cwnd, srtt)
    assert pacer.rate == pytest.approx(1.25 * cwnd / srtt)
    now = 10.0
    # The burst allowance: ten datagrams (the initial window), and a granularity's worth.
    assert _burst(pacer, now) == 10 + _granularity_worth(pacer)
    start, packets = now, 200
    for _ in range(packets):
        now = pacer.send_time(now)
        pacer.on_packet_sent(MSS, now)
    interval = srtt / cwnd * MSS / 1.25
    assert (now - start) / packets == pytest.approx(interval, rel=0.02)
    # A large window does not make a larger burst (after a stall, say): only the
    # granularity's worth grows with the rate.
    pacer.update_rate(200 * MSS, srtt)
    pacer.reset()
    assert _granularity_worth(pacer) == 5  # 1.25 * 200 datagrams per 50 ms, for 1 ms
    assert _burst(pacer, now) == 10 + _granularity_worth(pacer)
    # The burst is the caller's to choose.
    other = Pacer(max_datagram_size=MSS, granularity=0.001, burst=3 * MSS)
    other.update_rate(cwnd, srtt)
    other.reset()
    assert _burst(other, now) == 3 + _granularity_worth(other)


def _granularity_worth(pacer: Pacer) -> int:
    return math.floor(0.001 * pacer.rate / MSS + 1e-9)


def _burst(pacer: Pacer, now: float) -> int:
    """How many datagrams may go back to back at ``now``."""
    sent = 0
    while pacer.send_time(now) <= now:
        pacer.on_packet_sent(MSS, now)
        sent += 1
    return sent


# -- HyStart++ (RFC 9406): the first slow start ends when the round trip grows ----------------


def _round(cc: NewReno | Cubic, rtts: list[float], now: float = 0.0) -> None:
    """A round trip begins; its acknowledgements bring ``rtts``, each acknowledging one
    datagram that may grow the window."""
    cc.on_round_start()
    for rtt in rtts:
        cc.on_rtt_sample(rtt)
        cc.on_packets_acked(MSS, now, rtt)


def test_hystart_leaves_slow_start_after_eight_samples_in_a_row_over_the_threshold() -> None:
    for cc in (_reno(), _cubic(10)):
        _round(cc, [0.050] * 10)  # the first round: no minimum of the last round yet
        assert not cc.in_css and cc.congestion_window == INITIAL + 10 * MSS
        # The threshold is an eighth of the last round's minimum: 6.25 ms over 50 ms.
        # (Each round's first sample is from before any queue: the minimum stays 50 ms.)
        _round(cc, [0.050] + [0.0562] * 20)
        assert not cc.in_css
        # Seven over, one under, seven over: a burst's queue, not a standing one.
        _round(cc, [0.050] + [0.0563] * 7 + [0.051] + [0.0563] * 7)
        assert not cc.in_css
        before = cc.congestion_window
        _round(cc, [0.050] + [0.0563] * 7)
        assert not cc.in_css and cc.congestion_window == before + 8 * MSS  # doubling
        cc.on_rtt_sample(0.0563)  # the eighth in a row
        assert cc.in_css and cc.ssthresh == math.inf
        # Conservative slow start: a quarter of the growth.
        before = cc.congestion_window
        cc.on_packets_acked(4 * MSS, 0.0, 0.05)
        assert cc.congestion_window == before + MSS


def test_hystart_threshold_is_clamped_to_4_and_16_ms() -> None:
    for base, threshold in ((0.010, 0.004), (0.200, 0.016), (0.080, 0.010)):
        for factor, leaves in ((0.99, False), (1.01, True)):
            cc = _reno()
            _round(cc, [base] * 8)
            _round(cc, [base + threshold * factor] * 8)
            assert cc.in_css is leaves, (base, factor)


def test_hystart_css_ends_in_congestion_avoidance_after_five_rounds() -> None:
    cc = _reno()
    _round(cc, [0.05] * 8)
    _round(cc, [0.06] * 8)
    assert cc.in_css
    for _ in range(cc.CSS_ROUNDS - 1):  # the partial round counts as the first
        _round(cc, [0.06] * 8)
        assert cc.in_css and cc.ssthresh == math.inf
    cc.on_round_start()
    assert not cc.in_css and cc.ssthresh == cc.congestion_window
    # From now on NewReno's additive increase, and no more HyStart.
    window = cc.congestion_window
    _round(cc, [0.5] * 8)
    assert cc.congestion_window == window and not cc.in_css


def test_hystart_goes_back_to_slow_start_when_the_round_trip_falls_again() -> None:
    cc = _cubic(10)
    _round(cc, [0.05] * 8)
    _round(cc, [0.06] * 8)
    assert cc.in_css
    _round(cc, [0.056] * 7)  # under the line it crossed (56.25 ms), but too few to tell
    assert cc.in_css
    cc.on_rtt_sample(0.056)
    assert not cc.in_css  # a spurious exit: slow start again, afresh
    before = cc.congestion_window
    _round(cc, [0.06] * 7)
    assert not cc.in_css and cc.congestion_window == before + 7 * MSS


def test_a_loss_ends_css_and_hystart_is_only_for_the_first_slow_start() -> None:
    for cc in (_reno(), _cubic(10)):
        _round(cc, [0.05] * 8)
        _round(cc, [0.06] * 8)
        assert cc.in_css
        window = cc.congestion_window
        cc.on_congestion_event(sent_time=0.5, now=1.0)
        assert not cc.in_css
        assert cc.congestion_window == cc.ssthresh == int(window * cc.beta)
        # Later round trips growing do nothing (the window is known by now).
        cc.on_persistent_congestion()
        _round(cc, [0.05] * 8)
        _round(cc, [0.09] * 8)
        assert not cc.in_css
        cc.reset()  # a new path: HyStart again
        _round(cc, [0.05] * 8)
        _round(cc, [0.09] * 8)
        assert cc.in_css
