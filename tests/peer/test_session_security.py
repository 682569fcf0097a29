"""An off-path attacker who knows the endpoints gets nothing from a punching session: no
handshake message for a probe, no path change for a replayed handshake answer."""

from __future__ import annotations

from peer.events import PathKind
from peer.handshake import INIT, PROBE
from peer.session import PeerSession, SessionState
from tests.support.sessions import ALICE_PUBLIC, BOB_PUBLIC, session_pair

ATTACKER = ("192.0.2.66", 6666)


def pair() -> tuple[PeerSession, PeerSession]:
    return session_pair()


def test_a_strangers_probe_gets_no_handshake() -> None:
    initiator, _ = pair()
    initiator.datagrams_to_send(0.0)
    for _ in range(100):
        assert not initiator.receive_datagram(bytes([PROBE]), ATTACKER, 0.0)
    assert initiator.datagrams_to_send(0.0) == []
    assert ATTACKER not in initiator.candidates
    assert initiator.state is SessionState.WAITING  # nor does it start punching


def test_the_peers_probe_is_answered_at_most_once_per_interval() -> None:
    initiator, _ = pair()
    initiator.datagrams_to_send(0.0)
    for _ in range(100):
        initiator.receive_datagram(bytes([PROBE]), BOB_PUBLIC, 0.001)
    sent = initiator.datagrams_to_send(0.001)
    assert len([d for d, to, _ in sent if to == BOB_PUBLIC and d[0] == INIT]) == 1


def test_a_replayed_handshake_answer_from_elsewhere_moves_nothing() -> None:
    initiator, responder = pair()
    now = 0.0
    initiator.handle_timer(now)  # punch: message 1 to bob
    (message1,) = [d for d, to, _ in initiator.datagrams_to_send(now) if to == BOB_PUBLIC]
    assert responder.receive_datagram(message1, ALICE_PUBLIC, now)
    (message2,) = [d for d, to, _ in responder.datagrams_to_send(now) if to == ALICE_PUBLIC]
    assert initiator.receive_datagram(message2, BOB_PUBLIC, now)
    assert initiator.state is SessionState.CONNECTED and initiator.remote == BOB_PUBLIC
    initiator.datagrams_to_send(now)
    # The attacker replays both handshake messages from its own address.
    assert not responder.receive_datagram(message1, ATTACKER, now + 1)
    assert all(to != ATTACKER for _, to, _ in responder.datagrams_to_send(now + 1))
    assert not initiator.receive_datagram(message2, ATTACKER, now + 1)
    assert initiator.remote == BOB_PUBLIC and initiator.path is PathKind.DIRECT
    assert all(to != ATTACKER for _, to, _ in initiator.datagrams_to_send(now + 1))
