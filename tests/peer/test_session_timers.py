"""The session's one timer table and one transition table (peer.session, peer.session_state,
peer.keepalive): what get_timer promises, handle_timer does, and misuse is refused."""

from __future__ import annotations

import math
import random

import pytest

from peer.errors import LocalProtocolError, PeerError
from peer.events import Connected, MessageReceived, SessionClosed
from peer.keepalive import KeepaliveClock
from peer.session import PeerSession, SessionConfig, SessionState
from peer.session_state import TRANSITIONS, next_state
from tests.support.sessions import ALICE_PUBLIC, BOB_PUBLIC, session_pair

ALICE, BOB = ALICE_PUBLIC, BOB_PUBLIC


def pair(config: SessionConfig) -> tuple[PeerSession, PeerSession]:
    return session_pair(config)


def run(
    a: PeerSession, b: PeerSession, until: float, *, loss: float = 0.0, seed: int = 3
) -> list[object]:
    """Both sessions on a lossy wire with 10 ms one way, in virtual time; checks after every
    timer that it moved past now (a timer that stays due would fire forever)."""
    rng = random.Random(seed)
    wire: list[tuple[float, PeerSession, bytes, tuple[str, int]]] = []
    events: list[object] = []
    now = 0.0
    while now <= until:
        for session, source in ((a, ALICE), (b, BOB)):
            other = b if session is a else a
            for data, _, _ in session.datagrams_to_send(now):
                if rng.random() >= loss:
                    wire.append((now + 0.01, other, data, source))
            while (event := session.next_event()) is not None:
                events.append(event)
        timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        arrivals = [at for at, *_ in wire]
        if not timers and not arrivals:
            break
        now = min(timers + arrivals)
        for item in [w for w in wire if w[0] <= now]:
            wire.remove(item)
            item[1].receive_datagram(item[2], item[3], now)
        for session in (a, b):
            due = session.get_timer()
            if due is not None and due <= now:
                session.handle_timer(now)
                after = session.get_timer()
                assert after is None or after > now, (session.peer, session.state, now, after)
    return events


def test_every_timer_moves_on_through_punching_loss_and_retransmissions() -> None:
    a, b = pair(SessionConfig(keepalive_interval=0.5, dead_after=3.0))
    for i in range(50):
        a.send(f"m{i}".encode(), 0.0)
    events = run(a, b, until=8.0, loss=0.2)
    assert sum(isinstance(e, Connected) for e in events) == 2
    received = [e.data for e in events if isinstance(e, MessageReceived)]
    assert received == [f"m{i}".encode() for i in range(50)]


def test_keepalives_keep_an_idle_channel_and_silence_kills_it() -> None:
    a, b = pair(SessionConfig(keepalive_interval=1.0, dead_after=4.0))
    events = run(a, b, until=30.0)
    assert not any(isinstance(e, SessionClosed) for e in events)  # keepalives both ways
    assert a.state is b.state is SessionState.CONNECTED
    # Now b goes quiet: a hears nothing and declares the path dead after dead_after.
    b.close(30.0)
    b.datagrams_to_send(30.0)  # (its close never arrives)
    while a.state is SessionState.CONNECTED:
        due = a.get_timer()
        assert due is not None
        a.handle_timer(due)
        a.datagrams_to_send(due)
    assert a.next_event() == SessionClosed("bob", "path dead: nothing heard for 4 s")
    # b's last keepalive reached a at most one jittered interval before 30 s.
    assert 30.0 + 4.0 - 1.1 - 0.01 <= due <= 30.0 + 4.0


def test_without_keepalives_an_idle_channel_needs_no_timer() -> None:
    a, b = pair(SessionConfig(keepalive_interval=None, dead_after=math.inf))
    run(a, b, until=5.0)
    assert a.state is b.state is SessionState.CONNECTED
    assert a.get_timer() is None and b.get_timer() is None


def test_keepalive_gaps_are_jittered_within_bounds() -> None:
    # (With a silent peer the transport's probes would go out between keepalives: the
    # gaps are the keepalive clock's, which the session asks after every send.)
    config = SessionConfig(keepalive_interval=10.0, keepalive_jitter=0.1, dead_after=math.inf)
    clock = KeepaliveClock(config, random.Random(4), 0.0)
    gaps = []
    now = 0.0
    for _ in range(20):
        due = clock.keepalive_at()
        assert due is not None
        gaps.append(due - now)
        clock.sent(due)
        now = due
    assert all(9.0 <= gap <= 11.0 for gap in gaps[1:]) and len(set(gaps)) > 1


def test_the_transition_table_refuses_what_it_does_not_list() -> None:
    assert next_state(SessionState.WAITING, SessionState.CONNECTED) is SessionState.CONNECTED
    with pytest.raises(LocalProtocolError):
        next_state(SessionState.CONNECTED, SessionState.PUNCHING)
    with pytest.raises(LocalProtocolError):
        next_state(SessionState.CLOSED, SessionState.CLOSED)
    assert all(
        SessionState.CLOSED in allowed
        for state, allowed in TRANSITIONS.items()
        if state is not SessionState.CLOSED
    )


def test_sending_on_a_closed_session_is_the_callers_mistake() -> None:
    a, _ = pair(SessionConfig())
    a.close(0.0)
    with pytest.raises(LocalProtocolError) as raised:
        a.send(b"too late", 0.0)
    assert isinstance(raised.value, PeerError)


def test_configs_check_themselves() -> None:
    with pytest.raises(LocalProtocolError):
        SessionConfig(punch_interval=0)
    with pytest.raises(LocalProtocolError):
        SessionConfig(keepalive_jitter=1.0)
    with pytest.raises(LocalProtocolError):
        SessionConfig(repunch_interval=5.0, repunch_max=1.0)
    SessionConfig(keepalive_interval=None, dead_after=math.inf)  # keepalives off: fine
