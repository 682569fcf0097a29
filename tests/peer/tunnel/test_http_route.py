"""Routing HTTP by Host on the gateway's shared port: the head, the host, the answers."""

from __future__ import annotations

import pytest

from peer.tunnel.http_route import (
    MAX_HEAD,
    HostDecodeError,
    error_response,
    head_end,
    request_host,
    site_name,
)


def test_the_host_of_a_request_without_its_port_in_lower_case() -> None:
    head = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST: Bob.Example:8080\r\n\r\n"
    assert head_end(head + b"body") == len(head)
    assert request_host(head) == "bob.example"
    assert request_host(b"GET / HTTP/1.0\r\nHost: a.b\r\n\r\n") == "a.b"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # two
        (b"GET / HTTP/1.1\r\nHost: bad_name!\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n", 400),
        (b"SSH-2.0-OpenSSH\r\n\r\n", 400),  # not HTTP
        (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 400),
    ],
)
def test_requests_without_a_usable_host_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(HostDecodeError) as caught:
        request_host(head)
    assert caught.value.status == status


def test_a_head_that_never_ends_is_refused_once_too_large() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: a") is None
    with pytest.raises(HostDecodeError) as caught:
        head_end(b"x" * (MAX_HEAD + 1))
    assert caught.value.status == 431


def test_site_names_and_error_answers() -> None:
    assert site_name("Shop.Example.") == "shop.example"
    with pytest.raises(ValueError, match="bad host name"):
        site_name("-bad.example")
    answer = error_response(404, "no site x here")
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and answer.endswith(
        b"\r\n\r\nno site x here\n"
    )
    assert b"Content-Length: 15\r\n" in answer
