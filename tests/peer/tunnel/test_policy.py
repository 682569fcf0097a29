"""Who may open what on an exposing peer, and what an exit refuses to reach."""

from __future__ import annotations

import pytest

from peer.tunnel.policy import Accept, ExposeConfig, ExposePolicy, Refusal
from peer.tunnel.specs import Protocol, parse_service
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind

SERVICES = (parse_service("ssh=127.0.0.1:22"), parse_service("dns=10.0.0.53:53/udp"))


def _policy(**changes: object) -> ExposePolicy:
    settings: dict[str, object] = {"services": SERVICES, "allow": frozenset({"alice"})}
    settings.update(changes)
    return ExposePolicy(ExposeConfig(**settings))  # type: ignore[arg-type]


def test_an_allowed_peer_gets_its_services_with_their_protocol() -> None:
    policy = _policy()
    assert policy.decide("alice", OpenRequest(RequestKind.SERVICE, "ssh")) == Accept(
        "127.0.0.1", 22, Protocol.TCP, "ssh"
    )
    udp = OpenRequest(RequestKind.SERVICE, "dns", protocol=Protocol.UDP)
    assert policy.decide("alice", udp) == Accept("10.0.0.53", 53, Protocol.UDP, "dns")
    lookup = policy.decide("alice", OpenRequest(RequestKind.LOOKUP, "dns"))
    assert isinstance(lookup, Accept) and lookup.protocol is Protocol.UDP


@pytest.mark.parametrize(
    ("peer", "request_", "status"),
    [
        ("carol", OpenRequest(RequestKind.SERVICE, "ssh"), OpenStatus.NOT_ALLOWED),
        ("alice", OpenRequest(RequestKind.SERVICE, "web"), OpenStatus.UNKNOWN_SERVICE),
        ("alice", OpenRequest(RequestKind.SERVICE, "dns"), OpenStatus.BAD_REQUEST),
        ("alice", OpenRequest(RequestKind.CONNECT, "example.org", 80), OpenStatus.NOT_ALLOWED),
        ("alice", OpenRequest(RequestKind.LOOKUP_EXIT, "exit"), OpenStatus.NOT_ALLOWED),
    ],
)
def test_default_deny(peer: str, request_: OpenRequest, status: OpenStatus) -> None:
    decision = _policy().decide(peer, request_)
    assert isinstance(decision, Refusal) and decision.status is status
    assert _policy().screen("carol") == "carol is not allowed here"
    assert _policy().screen("alice") is None


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.1.1",
     "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_an_exit_refuses_its_own_side(host: str) -> None:
    policy = _policy(exit=True)
    decision = policy.decide("alice", OpenRequest(RequestKind.CONNECT, host, 80))
    assert isinstance(decision, Refusal) and decision.status is OpenStatus.FORBIDDEN_TARGET
    allowed = _policy(exit=True, exit_private=True).decide(
        "alice", OpenRequest(RequestKind.CONNECT, host, 80)
    )
    assert isinstance(allowed, Accept)


def test_an_exit_reaches_public_addresses_and_checks_names_once_resolved() -> None:
    policy = _policy(exit=True)
    for host in ("203.0.113.7", "2001:db8::7", "example.org"):
        decision = policy.decide("alice", OpenRequest(RequestKind.CONNECT, host, 443))
        assert isinstance(decision, Accept) and decision.exit
    assert policy.allowed_addresses("mixed.example", ["127.0.0.1", "203.0.113.7"]) == [
        "203.0.113.7"
    ]
    refused = policy.allowed_addresses("local.example", ["127.0.0.1", "::1"])
    assert isinstance(refused, Refusal) and "resolves only to" in refused.reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"services": ()}, "nothing to expose"),
        ({"allow": frozenset()}, "nobody allowed"),
        ({"services": (SERVICES[0], SERVICES[0])}, "same name"),
        ({"connect_timeout": 0}, "positive"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _policy(**changes)
