"""The sans-I/O STUN Binding service, through the rendezvous core: RFC 5780 address
selection, RFC 3489 framing, and the rules that keep it from being a reflector."""

from __future__ import annotations

import os

import pytest

from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.ratelimit import RateLimit
from rendezvous.registry import NameRegistry
from rendezvous.routes import Transmit, UdpSocket
from stunproto import (
    AttrType,
    ChangeRequest,
    ErrorCode,
    MessageClass,
    Method,
    StunEncodeError,
    StunMessage,
)
from stunproto.message import new_transaction_id

PRIMARY = ("203.0.113.10", 3478)
ALT_IP = "203.0.113.11"
CLIENT = ("198.51.100.20", 40000)


def _service(alternate: bool = True, **kw: object) -> RendezvousCore:
    stun = StunServiceConfig(primary=PRIMARY, alternate_ip=ALT_IP if alternate else None, **kw)  # type: ignore[arg-type]
    return RendezvousCore(RendezvousConfig(stun=stun), NameRegistry())


def _handle(
    core: RendezvousCore, data: bytes, source: tuple[str, int], local: tuple[str, int], now: float
) -> Transmit | None:
    """One datagram on the STUN socket at ``local``: the one answer, or None."""
    core.receive_datagram(data, source, UdpSocket(local), now)
    sent = core.datagrams_to_send(now)
    assert len(sent) <= 1
    return sent[0] if sent else None


def _request(*attrs: tuple[int, object], legacy: bool = False) -> StunMessage:
    tid = os.urandom(16) if legacy else new_transaction_id()
    if legacy and tid[:4] == bytes.fromhex("2112a442"):
        tid = b"\x00" + tid[1:]
    return StunMessage(Method.BINDING, MessageClass.REQUEST, tid, attrs)


def _answer(service: RendezvousCore, request: StunMessage, local: tuple[str, int] = PRIMARY):
    reply = _handle(service, request.encode(), CLIENT, local, 0.0)
    assert reply is not None
    return reply, StunMessage.parse(reply.data)


def test_four_sockets_with_alternate_port_defaulting_to_primary_plus_one() -> None:
    assert _service().local_addresses == (
        PRIMARY,
        ("203.0.113.10", 3479),
        (ALT_IP, 3478),
        (ALT_IP, 3479),
    )
    assert _service(alternate=False).local_addresses == (PRIMARY,)


def test_plain_binding_gets_mapped_origin_and_other_address() -> None:
    request = _request()
    reply, response = _answer(_service(), request)
    assert reply.via == UdpSocket(PRIMARY) and reply.destination == CLIENT
    assert response.transaction_id == request.transaction_id
    assert response.message_class is MessageClass.SUCCESS
    assert response.get(AttrType.XOR_MAPPED_ADDRESS) == CLIENT
    assert response.get(AttrType.RESPONSE_ORIGIN) == PRIMARY
    assert response.get(AttrType.OTHER_ADDRESS) == (ALT_IP, 3479)
    assert AttrType.FINGERPRINT in response


def test_fast_path_and_general_path_agree() -> None:
    service = _service(software="test")
    plain = _request()
    _, fast = _answer(service, plain)
    # Same request with an attribute that forces the general path.
    _, general = _answer(service, _request((AttrType.CHANGE_REQUEST, ChangeRequest())))
    strip = {AttrType.FINGERPRINT}
    assert [a for a in fast.attributes if a[0] not in strip] == [
        a for a in general.attributes if a[0] not in strip
    ]


@pytest.mark.parametrize(
    ("change_ip", "change_port", "expected_local"),
    [
        (True, True, (ALT_IP, 3479)),
        (True, False, (ALT_IP, 3478)),
        (False, True, ("203.0.113.10", 3479)),
        (False, False, PRIMARY),
    ],
)
def test_change_request_picks_the_source(
    change_ip: bool, change_port: bool, expected_local: tuple[str, int]
) -> None:
    request = _request((AttrType.CHANGE_REQUEST, ChangeRequest(change_ip, change_port)))
    reply, response = _answer(_service(), request)
    assert reply.via == UdpSocket(expected_local)
    assert reply.destination == CLIENT
    assert response.get(AttrType.RESPONSE_ORIGIN) == expected_local
    # OTHER-ADDRESS describes the address the request arrived on.
    assert response.get(AttrType.OTHER_ADDRESS) == (ALT_IP, 3479)


def test_change_request_from_the_alternate_socket_goes_back_to_primary() -> None:
    request = _request((AttrType.CHANGE_REQUEST, ChangeRequest(True, True)))
    reply, response = _answer(_service(), request, local=(ALT_IP, 3479))
    assert reply.via == UdpSocket(PRIMARY)
    assert response.get(AttrType.OTHER_ADDRESS) == PRIMARY


def test_rfc3489_request_gets_rfc3489_attributes() -> None:
    request = _request((AttrType.CHANGE_REQUEST, ChangeRequest(False, True)), legacy=True)
    _reply, response = _answer(_service(), request)
    assert response.transaction_id == request.transaction_id
    assert response.legacy
    assert response.get(AttrType.MAPPED_ADDRESS) == CLIENT
    assert response.get(AttrType.SOURCE_ADDRESS) == ("203.0.113.10", 3479)
    assert response.get(AttrType.CHANGED_ADDRESS) == (ALT_IP, 3479)
    assert AttrType.XOR_MAPPED_ADDRESS not in response
    assert AttrType.FINGERPRINT not in response


def test_response_port_changes_only_the_port() -> None:
    reply, response = _answer(_service(), _request((AttrType.RESPONSE_PORT, 5555)))
    assert reply.destination == (CLIENT[0], 5555)
    assert response.get(AttrType.XOR_MAPPED_ADDRESS) == CLIENT


def test_response_address_is_refused_not_honoured() -> None:
    request = _request((AttrType.RESPONSE_ADDRESS, ("192.0.2.99", 9)), legacy=True)
    reply, response = _answer(_service(), request)
    assert reply.destination == CLIENT
    assert response.message_class is MessageClass.ERROR
    assert response.get(AttrType.ERROR_CODE).code == 420
    # RFC 3489 framing: lengths stay multiples of four for old parsers.
    assert response.get(AttrType.UNKNOWN_ATTRIBUTES) == (AttrType.RESPONSE_ADDRESS,) * 2
    assert all(len(value) % 4 == 0 for value in _raw_lengths(reply.data))


def test_change_request_without_alternate_address_is_420_and_no_other_address() -> None:
    service = _service(alternate=False)
    _, plain = _answer(service, _request())
    assert AttrType.OTHER_ADDRESS not in plain
    _, refused = _answer(service, _request((AttrType.CHANGE_REQUEST, ChangeRequest(True, False))))
    assert refused.get(AttrType.ERROR_CODE) == ErrorCode(420, "Unknown Attribute")


def test_padding_is_echoed_no_larger_than_the_request() -> None:
    request = _request((AttrType.PADDING, bytes(500)))
    data = request.encode()
    reply = _handle(_service(), data, CLIENT, PRIMARY, 0.0)
    assert reply is not None
    assert StunMessage.parse(reply.data).get(AttrType.PADDING) == bytes(500)
    assert len(reply.data) < len(data) + 100


def test_unknown_method_is_bad_request_and_indications_are_ignored() -> None:
    unknown = StunMessage(0x0FF, MessageClass.REQUEST, new_transaction_id())
    _, response = _answer(_service(), unknown)
    assert response.get(AttrType.ERROR_CODE).code == 400
    indication = StunMessage(Method.BINDING, MessageClass.INDICATION, new_transaction_id())
    assert _handle(_service(), indication.encode(), CLIENT, PRIMARY, 0.0) is None
    assert _handle(_service(), b"\xff" * 40, CLIENT, PRIMARY, 0.0) is None
    assert _handle(_service(), b"\x00\x01\x00\x04" + bytes(16), CLIENT, PRIMARY, 0.0) is None


def test_rate_limit_per_source() -> None:
    service = _service(rate_limit=RateLimit(rate=10, burst=5))
    data = _request().encode()
    answered = [_handle(service, data, CLIENT, PRIMARY, 0.0) is not None for _ in range(8)]
    assert answered == [True] * 5 + [False] * 3
    # Another source is unaffected, and the first recovers as tokens refill.
    assert _handle(service, data, ("198.51.100.21", 1), PRIMARY, 0.0) is not None
    assert _handle(service, data, CLIENT, PRIMARY, 0.1) is not None
    assert service.limiter.dropped == 3


def test_other_address_is_the_alternate_address_wherever_the_request_arrived() -> None:
    # As coturn does, which turnutils_natdiscovery relies on for its test III.
    for local in (PRIMARY, ("203.0.113.10", 3479), (ALT_IP, 3478)):
        _, response = _answer(_service(), _request(), local=local)
        assert response.get(AttrType.OTHER_ADDRESS) == (ALT_IP, 3479)
    _, response = _answer(_service(), _request(), local=(ALT_IP, 3479))
    assert response.get(AttrType.OTHER_ADDRESS) == PRIMARY


def _raw_lengths(data: bytes) -> list[bytes]:
    values, pos = [], 20
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        values.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)
    return values


@pytest.mark.parametrize("client", [CLIENT, ("2001:db8::20", 40000)], ids=["ipv4", "ipv6"])
def test_padding_that_would_overflow_the_answer_is_cut_not_a_crash(
    client: tuple[str, int],
) -> None:
    # The largest request a datagram holds, nearly all PADDING: the echo (with the mapped,
    # origin, other and software attributes beside it) once overflowed STUN's 16 bits.
    request = _request((AttrType.PADDING, bytes(65_400)))
    service = _service()
    reply = _handle(service, request.encode(fingerprint=True), client, PRIMARY, 0.0)
    assert reply is not None
    assert len(reply.data) <= 65_507  # (a UDP payload)
    parsed = StunMessage.parse(reply.data)
    assert parsed.message_class is MessageClass.SUCCESS
    assert 64_000 <= len(parsed.get(AttrType.PADDING)) <= 65_400


def test_an_answer_too_large_to_encode_is_a_clear_error() -> None:
    with pytest.raises(StunEncodeError, match="65535"):
        _request((AttrType.PADDING, bytes(70_000))).encode()
    with pytest.raises(StunEncodeError, match="65535"):
        _request(*[(AttrType.PADDING, bytes(30_000))] * 3).encode()
