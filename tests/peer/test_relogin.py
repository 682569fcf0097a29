"""Staying reachable (peer.relogin, peer.rendezvous_client, peer.agent), sans-I/O: after a
lost registration the peer logs in again with exponential backoff and jitter, for as long
as it runs, and says so once each way (Offline, then Online).

The server is the real rendezvous core; a restart is a fresh core with empty state, and a
server that is down answers nothing. Time is virtual.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from natprobe.report import NatType
from peer.agent import AgentConfig, PeerAgent
from peer.errors import LocalProtocolError
from peer.events import AgentEvent, ConnectFailed, LoggedIn, LoginFailed, Offline, Online
from peer.identity import Identity
from peer.relogin import Backoff, BackoffConfig
from peer.rendezvous_client import LoginState, RendezvousClientConfig
from peer.routes import TCP, Via
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import UdpSocket
from stunproto.attributes import Address

SERVER = ("203.0.113.10", 3478)
VIA = UdpSocket(SERVER)
ALICE_AT = ("198.51.100.1", 40001)
REFRESH = 5.0  # seconds between refreshes: a loss is noticed within this


def fresh_core(seed: int = 5) -> RendezvousCore:
    rng = random.Random(seed)
    return RendezvousCore(
        # (A restarted server keeps its key, as the real one keeps its key file.)
        RendezvousConfig(stun=StunServiceConfig(primary=SERVER), server_key=bytes(range(32))),
        NameRegistry(),
        random_bytes=rng.randbytes,
    )


class Link:
    """One agent and the rendezvous core, datagrams delivered at once, timers in virtual
    time. ``core`` None: the server is down (its datagrams go nowhere)."""

    def __init__(self, *, over_tcp: bool = False, seed: int = 1) -> None:
        identity = Identity.generate()
        self.agent = PeerAgent(
            AgentConfig(
                rendezvous=RendezvousClientConfig(
                    server=SERVER,
                    name="alice",
                    public_key=identity.public_key,
                    nat_type=NatType.FULL_CONE,
                    refresh_interval=REFRESH,
                ),
                relay_only=over_tcp,
                over_tcp=over_tcp,
            ),
            static=identity.x25519_private,
            rng=random.Random(seed),
        )
        self.core: RendezvousCore | None = fresh_core()
        self.at: Address = ALICE_AT  # where the server sees us (our NAT's mapping)
        self.now = 0.0
        self.events: list[tuple[float, AgentEvent]] = []
        self.vias: list[Via] = []  # the route of every datagram the agent sent

    def flush(self) -> None:
        for _ in range(100):
            moved = False
            for data, destination, via in self.agent.datagrams_to_send(self.now):
                moved = True
                self.vias.append(via)
                if self.core is not None and destination == SERVER:
                    self.core.receive_datagram(data, self.at, VIA, self.now)
            if self.core is not None:
                for transmit in self.core.datagrams_to_send(self.now):
                    moved = True
                    if transmit.destination == self.at:
                        self.agent.receive_datagram(transmit.data, SERVER, self.now)
            if not moved:
                break
        while (event := self.agent.next_event()) is not None:
            self.events.append((self.now, event))

    def run_until(self, until: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Timers up to ``until``, or until ``stop()`` holds."""
        for _ in range(100_000):
            if stop is not None and stop():
                return
            timers = [self.agent.get_timer()]
            if self.core is not None:
                timers.append(self.core.get_timer())
            due = min((t for t in timers if t is not None), default=None)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            self.agent.handle_timer(self.now)
            if self.core is not None:
                self.core.handle_timer(self.now)
            self.flush()
        else:
            raise AssertionError("timers never settle")
        self.now = until

    def of(self, kind: type) -> list[AgentEvent]:
        return [event for _, event in self.events if isinstance(event, kind)]

    def saw(self, kind: type) -> Callable[[], bool]:
        return lambda: bool(self.of(kind))

    def login(self) -> None:
        self.agent.login(self.now)
        self.flush()
        assert self.agent.rendezvous.state is LoginState.LOGGED_IN

    def state(self) -> LoginState:
        return self.agent.rendezvous.state

    @property
    def retry_in(self) -> float:
        retry_at = self.agent.rendezvous.reachability.retry_at
        assert retry_at is not None
        return retry_at - self.now


def within_jitter(delay: float, nominal: float, jitter: float = 0.2) -> bool:
    return nominal * (1 - jitter) <= delay <= nominal * (1 + jitter)


# ---------------------------------------------------------------- the backoff


def test_backoff_doubles_within_the_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(BackoffConfig(), random.Random(3))
    nominals = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    delays = [backoff.next_delay() for _ in nominals]
    assert all(
        within_jitter(delay, nominal) for delay, nominal in zip(delays, nominals, strict=True)
    )
    capped = delays[6:]
    assert len(set(capped)) == len(capped)  # jittered: peers do not come back in lockstep
    backoff.reset()
    assert within_jitter(backoff.next_delay(), 1.0)


def test_the_jitter_spans_its_whole_band() -> None:
    draws = [Backoff(BackoffConfig(), random.Random(seed)).next_delay() for seed in range(400)]
    assert min(draws) < 0.82 and max(draws) > 1.18
    assert all(0.8 <= draw <= 1.2 for draw in draws)


@pytest.mark.parametrize(
    "wrong",
    [
        {"first": 0.0},
        {"first": 10.0, "maximum": 5.0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_backoff_config_refuses_what_cannot_work(wrong: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        BackoffConfig(**wrong)


# ---------------------------------------------------------------- losing and regaining


def test_a_restarted_server_is_logged_in_to_again() -> None:
    link = Link()
    link.login()
    assert link.of(LoggedIn) and not link.of(Online)  # the first login is LoggedIn alone
    link.run_until(12.0)
    assert not link.of(Offline)  # refreshes went through: nothing to report
    link.core = fresh_core(seed=6)  # restarted: it has forgotten everyone
    link.run_until(12.0 + REFRESH, stop=link.saw(Offline))  # a refresh answered 401
    (offline,) = link.of(Offline)
    assert isinstance(offline, Offline)
    assert "registration lost" in offline.reason and "log in again" in offline.reason
    assert within_jitter(offline.retry_in, 1.0)
    assert link.state() is LoginState.OFFLINE
    link.run_until(link.now + 1.3)
    assert link.state() is LoginState.LOGGED_IN
    (online,) = link.of(Online)
    assert online == Online(ALICE_AT)
    assert link.core.introductions.online("alice", link.now) is not None
    assert len(link.of(LoggedIn)) == 2 and not link.of(LoginFailed)
    # The backoff starts again from the bottom after a success.
    link.events.clear()
    link.core = fresh_core(seed=7)
    link.run_until(link.now + REFRESH, stop=link.saw(Offline))
    (again,) = link.of(Offline)
    assert isinstance(again, Offline) and within_jitter(again.retry_in, 1.0)


def test_a_restarted_server_with_the_same_key_is_logged_in_to_with_the_ticket() -> None:
    link = Link()
    link.login()
    client = link.agent.rendezvous
    assert client.ticket is not None and not client.resumed
    link.core = fresh_core(seed=6)  # restarted, same key file: it has forgotten everyone
    link.run_until(link.now + REFRESH, stop=link.saw(Offline))
    link.run_until(link.now + 1.3)
    assert link.state() is LoginState.LOGGED_IN and client.resumed  # no Diffie-Hellman
    assert link.of(Online) and not link.of(LoginFailed)
    registration = link.core.introductions.online("alice", link.now)
    assert registration is not None and registration.session_key == client.session_key


def test_a_server_that_is_down_is_tried_ever_more_slowly_and_reported_once() -> None:
    link = Link()
    link.login()
    link.core = None
    link.run_until(REFRESH + 20.0, stop=link.saw(Offline))  # a refresh unanswered
    (offline,) = link.of(Offline)
    assert isinstance(offline, Offline) and "stopped answering" in offline.reason
    # Each attempt is unanswered in turn; the next one waits twice as long, up to 60 s.
    waits = []
    for _ in range(9):
        assert link.state() is LoginState.OFFLINE
        waits.append(link.retry_in)
        link.run_until(link.now + link.retry_in)
        assert link.state() is LoginState.CHALLENGED  # the attempt went out...
        link.run_until(link.now + 30.0, stop=lambda: link.state() is LoginState.OFFLINE)
        # ...and went unanswered
    assert waits[0] == pytest.approx(offline.retry_in)  # the one the Offline announced
    nominals = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert all(
        within_jitter(wait, nominal) for wait, nominal in zip(waits, nominals, strict=True)
    ), waits
    assert len(link.of(Offline)) == 1 and not link.of(Online) and not link.of(LoginFailed)
    # Back: the next attempt gets through, reported once.
    link.core = fresh_core()
    link.run_until(link.now + link.retry_in + 1.0)
    assert link.state() is LoginState.LOGGED_IN
    assert link.of(Online) == [Online(ALICE_AT)]
    assert len(link.of(Offline)) == 1


def test_a_new_public_mapping_is_logged_in_again_without_going_offline() -> None:
    link = Link()
    link.login()
    link.at = ("198.51.100.1", 50002)  # our NAT moved us to another port
    link.run_until(REFRESH + 1.0)
    assert link.agent.rendezvous.public_endpoint == link.at
    assert link.of(Online) == [Online(link.at)]
    assert not link.of(Offline)
    assert link.core is not None
    registration = link.core.introductions.online("alice", link.now)
    assert registration is not None and registration.endpoint == link.at


def test_connecting_while_offline_is_a_connect_failure_not_a_mistake() -> None:
    link = Link()
    link.login()
    link.core = fresh_core(seed=6)
    link.run_until(REFRESH + 1.0, stop=link.saw(Offline))
    assert link.state() is LoginState.OFFLINE
    link.agent.connect("bob", link.now)
    link.flush()
    (failed,) = link.of(ConnectFailed)
    assert isinstance(failed, ConnectFailed) and "offline" in failed.reason


def test_a_connect_told_to_log_in_again_loses_the_registration() -> None:
    link = Link()
    link.login()
    link.core = fresh_core(seed=6)
    link.agent.connect("bob", link.now)
    link.flush()
    (failed,) = link.of(ConnectFailed)
    assert isinstance(failed, ConnectFailed) and failed.code == 401
    assert len(link.of(Offline)) == 1  # at once, not at the next refresh
    link.run_until(link.now + 1.3)
    assert link.of(Online) == [Online(ALICE_AT)]


def test_the_first_login_failing_is_still_start_ups_to_decide() -> None:
    link = Link()
    link.core = None
    link.agent.login(0.0)
    link.flush()
    link.run_until(60.0)
    assert [type(event) for _, event in link.events] == [LoginFailed]
    assert link.state() is LoginState.FAILED
    assert link.agent.get_timer() is None  # no retry of its own


# ---------------------------------------------------------------- over TCP


def test_a_lost_tcp_connection_is_reopened_only_when_the_backoff_says() -> None:
    link = Link(over_tcp=True)
    link.login()
    agent = link.agent
    assert not agent.wants_server_connection  # connected, logged in: nothing to do
    agent.connection_lost("the server closed the TCP connection", link.now)
    link.flush()
    (offline,) = link.of(Offline)
    assert isinstance(offline, Offline) and "closed the TCP connection" in offline.reason
    # Until the retry is due the adapter must leave the server alone.
    link.core = None
    link.run_until(link.now + offline.retry_in * 0.5)
    assert not agent.wants_server_connection
    link.run_until(link.now + offline.retry_in)
    assert agent.wants_server_connection  # the login is out: the adapter reopens for it
    # Reopening failed: this attempt failed, silently, and the next waits twice as long.
    agent.connection_lost("connection refused", link.now)
    link.flush()
    assert not agent.wants_server_connection and len(link.of(Offline)) == 1
    assert within_jitter(link.retry_in, 2.0)
    # A late second report (the login timed out too) does not step the backoff again.
    retry_at = agent.rendezvous.reachability.retry_at
    agent.connection_lost("timed out", link.now)
    assert agent.rendezvous.reachability.retry_at == retry_at
    # The server is back and the connection reopens: logged in again over it.
    link.core = fresh_core()
    link.run_until(link.now + link.retry_in + 1.0)
    assert link.of(Online) == [Online(ALICE_AT)]
    # What a re-login sends goes over TCP, as everything to the rendezvous does.
    agent.connection_lost("again", link.now)
    link.vias.clear()
    link.events.clear()
    link.run_until(link.now + 2.0, stop=link.saw(LoggedIn))
    assert link.vias and set(link.vias) == {TCP}
