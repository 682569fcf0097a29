"""The peer's start-up decisions (peer.startup), without sockets or a clock."""

from __future__ import annotations

import math

import pytest

from natprobe.report import NatType
from peer.errors import PeerError, ServerUnreachable
from peer.rendezvous_requests import no_answer
from peer.session_config import SessionConfig
from peer.startup import (
    LoginAttempt,
    LoginPhase,
    PeerConfig,
    Transport,
    fallback_transport,
    first_transport,
    plan_keepalives,
    start_failure,
)

# ---------------------------------------------------------------- transport


@pytest.mark.parametrize("nat_type", list(NatType))
def test_forced_transport_is_used_whatever_the_nat(nat_type: NatType) -> None:
    assert first_transport(Transport.UDP, nat_type) is Transport.UDP
    assert first_transport(Transport.TCP, nat_type) is Transport.TCP


def test_auto_starts_over_udp_unless_udp_is_blocked() -> None:
    assert first_transport(Transport.AUTO, NatType.UDP_BLOCKED) is Transport.TCP
    for nat_type in set(NatType) - {NatType.UDP_BLOCKED}:
        assert first_transport(Transport.AUTO, nat_type) is Transport.UDP


def test_only_auto_falls_back_and_only_from_udp_to_tcp() -> None:
    assert fallback_transport(Transport.AUTO, Transport.UDP) is Transport.TCP
    assert fallback_transport(Transport.AUTO, Transport.TCP) is None  # once, then give up
    assert fallback_transport(Transport.UDP, Transport.UDP) is None
    assert fallback_transport(Transport.TCP, Transport.TCP) is None


def test_transport_values_are_the_cli_spellings() -> None:
    assert [str(transport) for transport in Transport] == ["auto", "udp", "tcp"]


@pytest.mark.parametrize(
    "wrong",
    [
        {"transport": "tcp"},  # the enum, not its spelling: the CLI converts
        {"keepalive": -1.0},
        {"login_timeout": 0.0},
        {"relay_timeout": -1.0},
        {"local_port": 65536},
        {"local_port": -1},
    ],
)
def test_peer_config_refuses_what_cannot_work(wrong: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PeerConfig(**wrong)  # type: ignore[arg-type]


def test_peer_config_defaults_leave_the_choices_to_the_peer() -> None:
    config = PeerConfig()
    assert config.transport is Transport.AUTO
    assert config.keepalive is None and config.probe_nat


# ---------------------------------------------------------------- keepalive pacing


def test_nothing_measured_nothing_configured_keeps_the_session_settings() -> None:
    session = SessionConfig()
    plan = plan_keepalives(session, keepalive=None, binding_lifetime=None)
    assert plan.session == session
    assert plan.refresh_interval is None


def test_half_the_binding_lifetime() -> None:
    plan = plan_keepalives(SessionConfig(), keepalive=None, binding_lifetime=30.0)
    assert plan.session.keepalive_interval == 15.0
    assert plan.session.dead_after == 60.0  # four keepalives unanswered
    assert plan.refresh_interval == 15.0


def test_a_short_lifetime_is_paced_no_faster_than_a_second() -> None:
    plan = plan_keepalives(SessionConfig(), keepalive=None, binding_lifetime=0.5)
    assert plan.session.keepalive_interval == 1.0
    assert plan.session.dead_after == 5.0  # never sooner than 5 s
    assert plan.refresh_interval == 1.0


def test_a_long_keepalive_still_refreshes_the_registration_every_20_s() -> None:
    plan = plan_keepalives(SessionConfig(), keepalive=None, binding_lifetime=120.0)
    assert plan.session.keepalive_interval == 60.0
    assert plan.session.dead_after == 240.0
    assert plan.refresh_interval == 20.0


def test_a_configured_keepalive_wins_over_the_measured_lifetime() -> None:
    plan = plan_keepalives(SessionConfig(), keepalive=3.0, binding_lifetime=100.0)
    assert plan.session.keepalive_interval == 3.0
    assert plan.session.dead_after == 12.0
    assert plan.refresh_interval == 3.0


def test_zero_turns_keepalives_and_dead_path_detection_off() -> None:
    session = SessionConfig(punch_timeout=7.0)
    plan = plan_keepalives(session, keepalive=0.0, binding_lifetime=30.0)
    assert plan.session.keepalive_interval is None
    assert plan.session.dead_after == math.inf
    assert plan.session.punch_timeout == 7.0  # the rest of the session config is kept
    assert plan.refresh_interval is None


# ---------------------------------------------------------------- one login attempt


def attempt(now: float = 100.0) -> LoginAttempt:
    return LoginAttempt(Transport.UDP, now, login_timeout=15.0, relay_timeout=5.0)


def test_logged_in_without_a_relay_is_ready_at_once() -> None:
    login = attempt()
    assert login.get_timer() == 115.0
    login.logged_in(101.0, relay_offered=False)
    assert login.phase is LoginPhase.READY and login.settled
    assert login.get_timer() is None
    assert not login.relay_missing


def test_an_offered_relay_is_waited_for_until_allocated() -> None:
    login = attempt()
    login.logged_in(101.0, relay_offered=True)
    assert login.phase is LoginPhase.AWAITING_RELAY and not login.settled
    assert login.get_timer() == 106.0  # relay_timeout after the login, not after the start
    login.handle_timer(105.9)
    assert login.phase is LoginPhase.AWAITING_RELAY
    login.relay_settled()
    assert login.phase is LoginPhase.READY and not login.relay_missing


def test_an_allocation_before_the_login_event_is_not_waited_for_again() -> None:
    login = attempt()
    login.relay_settled()
    login.logged_in(101.0, relay_offered=True)
    assert login.phase is LoginPhase.READY


def test_the_relay_gets_relay_timeout_then_the_peer_goes_on_without_it() -> None:
    login = attempt()
    login.logged_in(101.0, relay_offered=True)
    login.handle_timer(106.0)
    assert login.phase is LoginPhase.READY
    assert login.relay_missing
    assert login.failure is None


def test_no_answer_within_the_login_timeout_fails() -> None:
    login = attempt()
    login.handle_timer(114.9)
    assert login.phase is LoginPhase.LOGGING_IN
    login.handle_timer(115.0)
    assert login.phase is LoginPhase.FAILED
    assert login.failure == "login failed: no answer within 15 s"
    assert login.get_timer() is None


def test_a_refused_login_fails_with_the_servers_reason() -> None:
    login = attempt()
    login.login_failed("name taken")
    assert login.phase is LoginPhase.FAILED
    assert login.failure == "login failed: name taken"


def test_a_closed_tcp_connection_fails_the_login() -> None:
    login = LoginAttempt(Transport.TCP, 0.0, login_timeout=15.0, relay_timeout=5.0)
    login.connection_lost()
    assert login.phase is LoginPhase.FAILED
    assert login.failure == "the server closed the TCP connection"


def test_nothing_after_start_up_changes_the_outcome() -> None:
    login = attempt()
    login.logged_in(101.0, relay_offered=False)
    login.login_failed("a later re-login was refused")
    login.connection_lost()
    login.logged_in(130.0, relay_offered=True)
    login.handle_timer(1000.0)
    assert login.phase is LoginPhase.READY and login.failure is None

    failed = attempt()
    failed.login_failed("name taken")
    failed.logged_in(101.0, relay_offered=False)
    assert failed.phase is LoginPhase.FAILED
    assert failed.failure == "login failed: name taken"


# ---------------------------------------------------------------- what a failed start says

SERVER = ("203.0.113.10", 3478)


def _failed(transport: Transport, reason: str) -> LoginAttempt:
    attempt = LoginAttempt(transport, 0.0, login_timeout=15, relay_timeout=5)
    attempt.login_failed(reason)
    return attempt


def test_no_tcp_connection_after_a_silent_udp_login_names_both() -> None:
    udp = _failed(Transport.UDP, no_answer(10.2))
    assert udp.silence == "nothing within 10 s"
    error = start_failure(SERVER, udp, ServerUnreachable(SERVER, "TCP: connection refused"))
    assert isinstance(error, ServerUnreachable)
    assert str(error) == (
        "no rendezvous server answers at 203.0.113.10:3478 "
        "(UDP: nothing within 10 s; TCP: connection refused)"
    )


def test_a_silent_login_over_the_only_transport_is_no_server_either() -> None:
    udp = _failed(Transport.UDP, no_answer(10.2))
    error = start_failure(SERVER, udp, PeerError(udp.failure))
    assert (
        str(error) == "no rendezvous server answers at 203.0.113.10:3478 (UDP: nothing within 10 s)"
    )
    timed_out = LoginAttempt(Transport.TCP, 0.0, login_timeout=15, relay_timeout=5)
    timed_out.handle_timer(15.0)
    error = start_failure(SERVER, timed_out, PeerError(timed_out.failure))
    assert str(error).endswith("(TCP: nothing within 15 s)")


def test_a_refusal_is_raised_as_it_was() -> None:
    refused = _failed(Transport.UDP, "the name belongs to another key")
    assert refused.silence is None
    error = PeerError(refused.failure)
    assert start_failure(SERVER, refused, error) is error
    tcp_only = ServerUnreachable(SERVER, "TCP: connection refused")  # (no login began)
    assert start_failure(SERVER, None, tcp_only) is tcp_only
