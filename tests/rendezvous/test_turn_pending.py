"""An Allocate's success answer waits for the relay socket: sent when the adapter reports it
bound (relay_opened), a 508 instead when it could not bind it (relay_failed), and a
retransmission meanwhile neither allocates again nor gets an early answer."""

from __future__ import annotations

from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.turn_server import TurnServer
from stunproto import AttrType, MessageClass, Method, StunMessage
from stunproto.message import new_transaction_id
from tests.rendezvous.test_turn_server import (
    CLIENT,
    LOCAL,
    VIA,
    Client,
    _allocate_request,
    _code,
    _config,
    _relayed,
)


def _pending(server: TurnServer, **kw: object) -> tuple[Client, bytes]:
    """A client whose Allocate the server accepted; its answer held. (client, the request)"""
    client = Client(server, open_relays=False, **kw)  # type: ignore[arg-type]
    client.send(Method.ALLOCATE, sign=False)  # the 401 and its nonce
    request = _allocate_request(client)
    assert client.raw(request) == []
    return client, request


def test_the_success_answer_goes_out_only_once_the_relay_socket_is_bound() -> None:
    server = TurnServer(_config())
    client, request = _pending(server)
    assert server.allocation_count == 1 and server.serves(CLIENT, VIA, 0.0)
    (relay,) = server.relays_to_open()
    # The adapter has not said yet: nothing, also for a retransmission.
    assert client.raw(request, 0.5) == []
    (sent,) = server.relay_opened(relay, 1.0)
    assert (sent.destination, sent.via) == (CLIENT, VIA)
    answer = StunMessage.parse(sent.data)
    assert answer.message_class is MessageClass.SUCCESS and answer.check_integrity(client.key)
    assert answer.transaction_id == StunMessage.parse(request).transaction_id
    assert _relayed(answer) == relay
    # Said once: a second report sends nothing, a retransmission gets the same answer.
    assert server.relay_opened(relay, 1.5) == []
    (again,) = client.raw(request, 2.0)
    assert again.data == sent.data


def test_a_retransmission_while_pending_allocates_nothing_more() -> None:
    server = TurnServer(_config())
    client, request = _pending(server)
    for now in (0.1, 0.3, 0.7):
        assert client.raw(request, now) == []
    assert server.allocation_count == 1
    assert len(server.relays_to_open()) == 1
    # Another Allocate (a new transaction) from that 5-tuple: 437 as ever, at once.
    other = _allocate_request(client)
    (mismatch,) = client.raw(other, 1.0)
    assert _code(StunMessage.parse(mismatch.data)) == 437
    assert server.allocation_count == 1


def test_a_relay_socket_that_cannot_be_bound_answers_508_and_frees_the_quotas() -> None:
    # One allocation per user and per source: the failed one must not keep its place.
    server = TurnServer(_config(max_allocations_per_user=1, max_allocations_per_source=1))
    client, request = _pending(server)
    (relay,) = server.relays_to_open()
    (sent,) = server.relay_failed(relay, 1.0)
    assert (sent.destination, sent.via) == (CLIENT, VIA)
    refused = StunMessage.parse(sent.data)
    assert refused.message_class is MessageClass.ERROR and _code(refused) == 508
    assert refused.check_integrity(client.key)
    assert refused.get(AttrType.XOR_RELAYED_ADDRESS) is None
    assert server.allocation_count == 0 and not server.serves(CLIENT, VIA, 1.0)
    assert server.relays_to_close() == []  # never bound: nothing to close
    # Its retransmission gets the same 508, not a success nor a new allocation.
    (again,) = client.raw(request, 1.5)
    assert again.data == sent.data and server.relays_to_open() == []
    # The user's and the source's quotas are free again: a new Allocate succeeds.
    client.open_relays = True
    answer = client.allocate(now=2.0)
    assert answer.message_class is MessageClass.SUCCESS
    assert _relayed(answer) != relay  # (that port cools down)


def test_reports_for_allocations_already_gone_send_nothing() -> None:
    server = TurnServer(_config())
    assert server.relay_opened(("203.0.113.1", 50001), 0.0) == []
    assert server.relay_failed(("203.0.113.1", 50001), 0.0) == []
    # An allocation deleted (Refresh 0) before its socket was reported bound.
    client, _ = _pending(server)
    (relay,) = server.relays_to_open()
    client.open_relays = True
    deleted = client.call(Method.REFRESH, (AttrType.LIFETIME, 0), now=0.5)
    assert deleted.get(AttrType.LIFETIME) == 0
    assert server.relay_opened(relay, 1.0) == []
    assert server.relays_to_close() == [relay]


def test_the_core_queues_the_held_answer_when_the_relay_is_reported() -> None:
    turn = _config()
    core = RendezvousCore(
        RendezvousConfig(stun=StunServiceConfig(primary=LOCAL)), NameRegistry(), turn=turn
    )
    assert core.turn is not None
    client = Client(core.turn, open_relays=False)
    client.send(Method.ALLOCATE, sign=False)
    core.receive_datagram(_allocate_request(client), CLIENT, VIA, 0.0)
    assert core.datagrams_to_send(0.0) == [] and core.relays_pending
    (relay,) = core.relays_to_open()
    core.relay_opened(relay, 0.0)
    (sent,) = core.datagrams_to_send(0.0)
    assert StunMessage.parse(sent.data).message_class is MessageClass.SUCCESS
    # And a failure: 508 through the core's queue.
    other = Client(core.turn, source=("198.51.100.8", 1), name="bob", open_relays=False)
    other.send(Method.ALLOCATE, sign=False)
    tid = new_transaction_id()
    core.receive_datagram(_allocate_request(other, tid), other.source, VIA, 1.0)
    (relay,) = core.relays_to_open()
    core.relay_failed(relay, 1.0)
    (sent,) = core.datagrams_to_send(1.0)
    assert sent.destination == other.source and _code(StunMessage.parse(sent.data)) == 508
    assert core.turn.allocation_count == 1
