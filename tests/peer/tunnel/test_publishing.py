"""The gateway's public ports: who may publish where, one owner per port."""

from __future__ import annotations

import pytest

from peer.tunnel.policy import Refusal
from peer.tunnel.publishing import Publication, PublishConfig, PublishTable
from peer.tunnel.specs import Protocol
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind


def _publish(port: int, protocol: Protocol = Protocol.TCP) -> OpenRequest:
    return OpenRequest(RequestKind.PUBLISH, "web", port, protocol)


def test_one_owner_per_port_and_protocol_until_released() -> None:
    table = PublishTable(PublishConfig(ports=range(8000, 8010)))
    first = table.claim("bob", _publish(8000))
    assert first == Publication("bob", "web", 8000, Protocol.TCP)
    taken = table.claim("carol", _publish(8000))
    assert isinstance(taken, Refusal) and taken.status is OpenStatus.PORT_TAKEN
    assert isinstance(table.claim("carol", _publish(8000, Protocol.UDP)), Publication)
    assert isinstance(first, Publication)
    table.release(first)
    assert isinstance(table.claim("carol", _publish(8000)), Publication)
    assert len(table) == 2


@pytest.mark.parametrize(
    ("config", "owner", "request_", "reason"),
    [
        (PublishConfig(ports=range(8000, 8010)), "bob", _publish(9000), "outside the published"),
        (
            PublishConfig(ports=range(8000, 8010), allow=frozenset({"bob"})),
            "carol",
            _publish(8000),
            "may not publish",
        ),
        (
            PublishConfig(ports=range(8000, 8010)),
            "bob",
            OpenRequest(RequestKind.SERVICE, "web"),
            "PUBLISH requests only",
        ),
    ],
)
def test_refusals(config: PublishConfig, owner: str, request_: OpenRequest, reason: str) -> None:
    refusal = PublishTable(config).claim(owner, request_)
    assert isinstance(refusal, Refusal) and reason in refusal.reason


def test_a_peer_holds_at_most_its_share_of_ports() -> None:
    table = PublishTable(PublishConfig(ports=range(8000, 8010), max_ports_per_peer=2))
    assert isinstance(table.claim("bob", _publish(8000)), Publication)
    assert isinstance(table.claim("bob", _publish(8001)), Publication)
    third = table.claim("bob", _publish(8002))
    assert isinstance(third, Refusal) and "publishes 2 ports already" in third.reason
    with pytest.raises(ValueError):
        PublishConfig(ports=range(0, 10))


def test_http_sites_have_one_owner_each_on_the_shared_port() -> None:
    table = PublishTable(PublishConfig(http_port=8080))
    site = OpenRequest(RequestKind.PUBLISH_HTTP, "web@Shop.Example")
    first = table.claim("bob", site)
    assert first == Publication("bob", "web", 8080, Protocol.TCP, "shop.example")
    assert table.site("shop.example") == first
    taken = table.claim("carol", OpenRequest(RequestKind.PUBLISH_HTTP, "web@shop.example"))
    assert isinstance(taken, Refusal) and taken.status is OpenStatus.PORT_TAKEN
    bad = table.claim("carol", OpenRequest(RequestKind.PUBLISH_HTTP, "web@bad_name"))
    assert isinstance(bad, Refusal) and bad.status is OpenStatus.BAD_REQUEST
    assert isinstance(first, Publication)
    table.release(first)
    assert table.site("shop.example") is None
    no_http = PublishTable(PublishConfig(ports=range(8000, 8001))).claim("bob", site)
    assert isinstance(no_http, Refusal) and "no HTTP sites" in no_http.reason
    with pytest.raises(ValueError, match="one of the publish ports"):
        PublishConfig(ports=range(8000, 8100), http_port=8080)
