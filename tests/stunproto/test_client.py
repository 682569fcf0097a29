"""The sans-I/O transaction engine: RFC 8489 retransmission schedule, matching, timeouts."""

from __future__ import annotations

import random

import pytest

from stunproto import MessageClass, Method, StunMessage
from stunproto.client import ResponseReceived, RetransmitPolicy, StunClient, TransactionTimedOut
from stunproto.message import new_transaction_id

SERVER = ("192.0.2.1", 3478)


def _request(rng: random.Random) -> StunMessage:
    return StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id(rng))


def _drive(client: StunClient, start: float, until: float) -> list[float]:
    """Advance time timer by timer; return the times at which datagrams went out."""
    sends = [start] * len(client.datagrams_to_send(start))
    while (at := client.get_timer()) is not None and at <= until:
        client.handle_timer(at)
        sends += [at] * len(client.datagrams_to_send(at))
    return sends


def test_rfc8489_default_schedule() -> None:
    client = StunClient()
    client.send_request(_request(random.Random(1)), SERVER, 0.0)
    sends = _drive(client, 0.0, 100.0)
    # RFC 8489 section 6.2.1: with RTO 500 ms, sends at 0, 500, 1500, ..., 31500 ms
    assert sends == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    event = client.next_event()
    assert isinstance(event, TransactionTimedOut)
    assert event.sends == 7
    assert RetransmitPolicy().total_time() == pytest.approx(39.5)


def test_capped_schedule_for_fast_probing() -> None:
    policy = RetransmitPolicy(rto=0.05, max_sends=6, rto_max=0.1, final_wait=2)
    client = StunClient(policy=policy)
    client.send_request(_request(random.Random(2)), SERVER, 10.0)
    sends = _drive(client, 10.0, 100.0)
    assert [round(t - 10.0, 3) for t in sends] == [0, 0.05, 0.15, 0.25, 0.35, 0.45]
    assert isinstance(client.next_event(), TransactionTimedOut)
    assert policy.total_time() == pytest.approx(0.55)


def test_response_matches_by_transaction_id_and_stops_retransmission() -> None:
    rng = random.Random(3)
    client = StunClient()
    request = _request(rng)
    client.send_request(request, SERVER, 0.0)
    client.datagrams_to_send(0.0)
    stray = StunMessage(Method.BINDING, MessageClass.SUCCESS, new_transaction_id(rng))
    assert not client.receive_datagram(stray.encode(), SERVER, 0.1)
    assert not client.receive_datagram(b"not stun at all", SERVER, 0.1)
    # A request with our id (a hairpinned copy of our own) is not an answer.
    assert not client.receive_datagram(request.encode(), SERVER, 0.1)
    response = request.reply(MessageClass.SUCCESS)
    assert client.receive_datagram(response.encode(), ("198.51.100.7", 3479), 0.2)
    event = client.next_event()
    assert isinstance(event, ResponseReceived)
    assert event.source == ("198.51.100.7", 3479)
    assert event.rtt == pytest.approx(0.2)
    assert event.sends == 1
    assert client.get_timer() is None
    assert client.pending == 0
    # A duplicate answer is not consumed twice.
    assert not client.receive_datagram(response.encode(), SERVER, 0.3)


def test_cancel_removes_the_timer() -> None:
    client = StunClient()
    tid = client.send_request(_request(random.Random(4)), SERVER, 0.0)
    client.cancel(tid)
    assert client.get_timer() is None


def test_only_requests_start_transactions() -> None:
    client = StunClient()
    indication = StunMessage(Method.BINDING, MessageClass.INDICATION, bytes(12))
    with pytest.raises(ValueError):
        client.send_request(indication, SERVER, 0.0)
