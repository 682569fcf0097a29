"""What users type for tunnels, parsed into values, and one-line errors otherwise."""

from __future__ import annotations

import pytest

from peer.tunnel.specs import (
    ListenSpec,
    Protocol,
    ServiceSpec,
    TargetSpec,
    TunnelSpecError,
    parse_listen,
    parse_service,
    parse_target,
    parse_users,
)


def test_services_listens_and_targets() -> None:
    assert parse_service("SSH=localhost:22") == ServiceSpec("ssh", "localhost", 22)
    assert parse_service("dns=[fd00::53]:53/UDP") == ServiceSpec(
        "dns", "fd00::53", 53, Protocol.UDP
    )
    assert str(parse_service("dns=[fd00::53]:53/udp")) == "dns=[fd00::53]:53/udp"
    assert parse_listen("8022") == ListenSpec("127.0.0.1", 8022)
    assert parse_listen("0.0.0.0:80") == ListenSpec("0.0.0.0", 80)
    assert parse_listen("[::1]:0") == ListenSpec("::1", 0)
    assert parse_target("Bob:ssh") == TargetSpec("bob", "ssh")


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_service, "ssh", "expected NAME=HOST:PORT"),
        (parse_service, "ssh=host", "expected HOST:PORT"),
        (parse_service, "ssh=host:0", "1-65535"),
        (parse_service, "ssh=::1:22", "write an IPv6 address as"),
        (parse_service, "ssh=[nothex]:22", "is not an IPv6 address"),
        (parse_service, "s h=host:22", "bad service name"),
        (parse_service, "ssh=bad_host!:22", "not a host name"),
        (parse_listen, "localhost:80", "must be an IP"),
        (parse_listen, "70000", "0-65535"),
        (parse_target, "bob", "expected PEER:SERVICE"),
        (parse_target, "b\u00f6b\u0430:ssh", "bad target"),
    ],
)
def test_bad_text_is_one_line(parse: object, text: str, message: str) -> None:
    with pytest.raises(TunnelSpecError, match=message) as caught:
        parse(text)  # type: ignore[operator]
    assert "\n" not in str(caught.value)


def test_users_files() -> None:
    text = "# shared\nann:s3cr:et\n\nbob:pw\n"
    assert parse_users(text, source="users") == {"ann": "s3cr:et", "bob": "pw"}
    for bad, message in (("ann\n", "users:1"), ("a:x\na:y\n", "given twice"), ("", "no USER")):
        with pytest.raises(TunnelSpecError, match=message):
            parse_users(bad, source="users")
