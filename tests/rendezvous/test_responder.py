"""The per-socket hot-path responder answers exactly as ``StunService.handle`` does."""

from __future__ import annotations

import pytest

from rendezvous.ratelimit import RateLimit
from rendezvous.stun_service import Reply, StunService, StunServiceConfig
from stunproto import AttrType, ChangeRequest, MessageClass, Method, StunMessage
from stunproto.message import new_transaction_id

PRIMARY = ("203.0.113.10", 3478)
SOURCES = [("198.51.100.20", 40000), ("2001:db8::7", 5000), ("198.51.100.21", 1)]


def _services(software: str | None) -> tuple[StunService, StunService]:
    def make() -> StunService:
        return StunService(
            StunServiceConfig(primary=PRIMARY, alternate_ip="203.0.113.11", software=software)
        )

    return make(), make()


@pytest.mark.parametrize("software", [None, "ours"])
@pytest.mark.parametrize("local", [PRIMARY, ("203.0.113.11", 3479)])
def test_same_bytes_as_handle(software: str | None, local: tuple[str, int]) -> None:
    via_handle, via_responder = _services(software)
    respond = via_responder.responder(local)
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
                expected = via_handle.handle(data, source, local, 0.0)
                got = respond(data, source, 0.0)
                assert expected is not None and got is not None
                if isinstance(got, bytes):
                    got = Reply(got, local, source)
                assert got == expected


def test_rate_limit_applies_on_the_fast_path() -> None:
    service = StunService(StunServiceConfig(primary=PRIMARY, rate_limit=RateLimit(rate=1, burst=2)))
    respond = service.responder(PRIMARY)
    data = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    answers = [respond(data, SOURCES[0], 0.0) for _ in range(4)]
    assert [answer is not None for answer in answers] == [True, True, False, False]
