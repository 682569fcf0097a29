"""The rendezvous core: the plain-Binding fast path answers exactly as the general path does,
and one routing order (TURN, then the rendezvous protocol, then STUN) with one rate limit and
answers by the route the request came by."""

from __future__ import annotations

import pytest

from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.ratelimit import RateLimit
from rendezvous.registry import NameRegistry
from rendezvous.routes import TcpConnection, Transmit, UdpSocket
from rendezvous.turn_config import TurnConfig
from rvproto.messages import RvAttr, RvMethod, rv_message
from stunproto import AttrType, ChangeRequest, MessageClass, Method, StunMessage
from stunproto.message import new_transaction_id

PRIMARY = ("203.0.113.10", 3478)
SOURCES = [("198.51.100.20", 40000), ("2001:db8::7", 5000), ("198.51.100.21", 1)]


def _core(
    software: str | None = None,
    *,
    rate_limit: RateLimit | None = None,
    turn: TurnConfig | None = None,
    alternate: bool = True,
) -> RendezvousCore:
    stun = StunServiceConfig(
        primary=PRIMARY,
        alternate_ip="203.0.113.11" if alternate else None,
        software=software,
        rate_limit=rate_limit or RateLimit(),
    )
    return RendezvousCore(RendezvousConfig(stun=stun), NameRegistry(), turn=turn)


def _handle(
    core: RendezvousCore, data: bytes, source: tuple[str, int], via: UdpSocket | TcpConnection
) -> Transmit | None:
    core.receive_datagram(data, source, via, 0.0)
    sent = core.datagrams_to_send(0.0)
    assert len(sent) <= 1
    return sent[0] if sent else None


@pytest.mark.parametrize("software", [None, "ours"])
@pytest.mark.parametrize("local", [PRIMARY, ("203.0.113.11", 3479)])
def test_same_bytes_as_handle(software: str | None, local: tuple[str, int]) -> None:
    via_handle, via_responder = _core(software), _core(software)
    respond = via_responder.plain_binding_responder(local)
    requests = [
        StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()),
        StunMessage(
            Method.BINDING,
            MessageClass.REQUEST,
            new_transaction_id(),
            ((AttrType.CHANGE_REQUEST, ChangeRequest(True, False)),),
        ),
    ]
    for _ in range(3):  # the second and third plain answers come from the cache
        for source in SOURCES:
            for request in requests:
                data = request.encode()
                expected = _handle(via_handle, data, source, UdpSocket(local))
                fast = respond(data, source, 0.0)
                if fast is None:  # not a plain Binding: the general path, as the adapter does
                    got = _handle(via_responder, data, source, UdpSocket(local))
                else:
                    got = Transmit(fast, source, UdpSocket(local))
                assert expected is not None and got is not None
                assert got == expected
    # The plain request took the fast path, the CHANGE-REQUEST one did not.
    assert respond(requests[0].encode(), SOURCES[0], 0.0)
    assert respond(requests[1].encode(), SOURCES[0], 0.0) is None


def test_rate_limit_applies_on_the_fast_path() -> None:
    core = _core(rate_limit=RateLimit(rate=1, burst=2), alternate=False)
    respond = core.plain_binding_responder(PRIMARY)
    data = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    answers = [respond(data, SOURCES[0], 0.0) for _ in range(4)]
    assert [bool(answer) for answer in answers] == [True, True, False, False]
    # Dropped is b"" (handled, nothing to send), not None (which means: the general path).
    assert answers[2] == b"" and core.limiter.dropped == 2


def _turn() -> TurnConfig:
    return TurnConfig(realm="r", shared_secret=b"s", relay_ip=PRIMARY[0])


def test_turn_methods_go_to_the_turn_server_and_binding_does_not() -> None:
    core = _core(turn=_turn())
    allocate = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id())
    answer = _handle(core, allocate.encode(), SOURCES[0], UdpSocket(PRIMARY))
    assert answer is not None
    parsed = StunMessage.parse(answer.data)
    # The TURN server's 401 challenge (with its realm), not the STUN service's 400.
    assert parsed.get(AttrType.ERROR_CODE).code == 401 and parsed.get(AttrType.REALM) == "r"
    binding = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
    answer = _handle(core, binding.encode(), SOURCES[0], UdpSocket(PRIMARY))
    assert answer is not None
    # RFC 5780's OTHER-ADDRESS: the STUN service answered, not TURN's bare Binding.
    assert StunMessage.parse(answer.data).get(AttrType.OTHER_ADDRESS) is not None


def test_without_turn_a_turn_method_is_a_bad_stun_request() -> None:
    core = _core()
    allocate = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id())
    answer = _handle(core, allocate.encode(), SOURCES[0], UdpSocket(PRIMARY))
    assert answer is not None
    assert StunMessage.parse(answer.data).get(AttrType.ERROR_CODE).code == 400
    assert _handle(core, b"\x40\x00\x00\x00", SOURCES[0], UdpSocket(PRIMARY)) is None


def test_rendezvous_methods_go_to_the_login_service() -> None:
    core = _core()
    login = rv_message(
        RvMethod.LOGIN,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((RvAttr.PEER_NAME, "a"), (RvAttr.PUBLIC_KEY, bytes(32)), (AttrType.PADDING, bytes(48))),
    ).encode(fingerprint=True)
    answer = _handle(core, login, SOURCES[0], UdpSocket(PRIMARY))
    assert answer is not None and answer.via == UdpSocket(PRIMARY)
    assert StunMessage.parse(answer.data).get(AttrType.ERROR_CODE).code == 401  # a challenge


def test_one_rate_limit_for_every_service() -> None:
    core = _core(rate_limit=RateLimit(rate=1, burst=2), turn=_turn())
    source = SOURCES[0]
    binding = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    allocate = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id()).encode()
    assert _handle(core, binding, source, UdpSocket(PRIMARY)) is not None
    assert _handle(core, allocate, source, UdpSocket(PRIMARY)) is not None
    # Both buckets' worth spent: STUN and TURN are refused alike, another source is not.
    assert _handle(core, binding, source, UdpSocket(PRIMARY)) is None
    assert _handle(core, allocate, source, UdpSocket(PRIMARY)) is None
    assert _handle(core, binding, SOURCES[2], UdpSocket(PRIMARY)) is not None


def test_answers_over_tcp_go_back_on_the_connection_unless_they_need_udp() -> None:
    core = _core()
    tcp = TcpConnection(PRIMARY)
    plain = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
    answer = _handle(core, plain.encode(), SOURCES[0], tcp)
    assert answer is not None and answer.via == tcp and answer.destination == SOURCES[0]
    # CHANGE-REQUEST and RESPONSE-PORT need another UDP socket or port: no answer over TCP.
    for attr in ((AttrType.CHANGE_REQUEST, ChangeRequest(True, True)), (AttrType.RESPONSE_PORT, 9)):
        request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id(), (attr,))
        assert _handle(core, request.encode(), SOURCES[0], tcp) is None
