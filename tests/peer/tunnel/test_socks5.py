"""The SOCKS5 server side (RFC 1928, RFC 1929) byte for byte: the three address types, the
credentials, the refusals and their answers, any split of the bytes, pipelined early data,
and that no input makes it raise or grow without bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import LocalProtocolError
from peer.tunnel.socks5 import (
    MAX_MESSAGE,
    AddressType,
    AuthMethod,
    ConnectRequested,
    NegotiationFailed,
    ReplyCode,
    SocksDecodeError,
    SocksEvent,
    SocksNegotiation,
    SocksServerConfig,
    SocksState,
    encode_address,
    encode_connect,
    encode_greeting,
    encode_userpass,
    parse_reply,
)

NO_AUTH = AuthMethod.NO_AUTHENTICATION
USERPASS = AuthMethod.USERNAME_PASSWORD
CREDENTIALS = SocksServerConfig(credentials={"alice": "s3cret", "bob": "hunter2"})
# An answer with BND.ADDR 0.0.0.0:0, as the failures send it (RFC 1928 section 6).
ZERO_BOUND = b"\x01\x00\x00\x00\x00\x00\x00"


def events(negotiation: SocksNegotiation) -> list[SocksEvent]:
    found = []
    while (event := negotiation.next_event()) is not None:
        found.append(event)
    return found


def feed(
    data: bytes, config: SocksServerConfig | None = None, *, bytewise: bool = False
) -> tuple[SocksNegotiation, list[SocksEvent], bytes]:
    negotiation = SocksNegotiation(config)
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        negotiation.receive_data(chunk)
    return negotiation, events(negotiation), negotiation.data_to_send()


def the_failure(negotiation: SocksNegotiation, found: list[SocksEvent]) -> str:
    assert negotiation.state is SocksState.FAILED
    assert len(found) == 1 and isinstance(found[0], NegotiationFailed)
    assert "\n" not in found[0].reason
    return found[0].reason


# -- CONNECT to each address type -----------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    ("host", "wire", "expected", "address_type"),
    [
        ("192.0.2.7", b"\x01\xc0\x00\x02\x07", "192.0.2.7", AddressType.IPV4),
        (
            "2001:db8:0:0:0:0:0:1",
            b"\x04\x20\x01\x0d\xb8" + bytes(11) + b"\x01",
            "2001:db8::1",  # compressed, whatever the client's spelling
            AddressType.IPV6,
        ),
        ("example.com", b"\x03\x0bexample.com", "example.com", AddressType.DOMAIN),
    ],
)
def test_connect_to_each_address_type(
    host: str, wire: bytes, expected: str, address_type: AddressType, bytewise: bool
) -> None:
    request = encode_connect(host, 443)
    assert request == b"\x05\x01\x00" + wire + b"\x01\xbb"  # RFC 1928 section 4
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + request, bytewise=bytewise)
    assert out == b"\x05\x00"  # method 0x00 chosen; no reply before the exit answers
    assert found == [ConnectRequested(expected, 443, address_type)]
    assert negotiation.state is SocksState.WAITING_FOR_EXIT
    assert negotiation.leftover == b""


def test_domain_names_are_passed_on_not_resolved() -> None:
    # A name that resolves nowhere still becomes a ConnectRequested: only the exit looks
    # names up (like curl --socks5-hostname), so nothing is resolved on this side.
    _, found, _ = feed(encode_greeting([NO_AUTH]) + encode_connect("no-such-host.invalid", 80))
    assert found == [ConnectRequested("no-such-host.invalid", 80, AddressType.DOMAIN)]


def test_a_utf8_domain_is_passed_on_as_idna() -> None:
    request = b"\x05\x01\x00\x03" + bytes([len("bücher.de".encode())]) + "bücher.de".encode()
    _, found, _ = feed(encode_greeting([NO_AUTH]) + request + b"\x00\x50")
    assert found == [ConnectRequested("xn--bcher-kva.de", 80, AddressType.DOMAIN)]


@pytest.mark.parametrize(
    ("name", "host", "address_type"),
    [
        ("10.1.2.3", "10.1.2.3", AddressType.IPV4),
        ("2001:DB8:0::1", "2001:db8::1", AddressType.IPV6),
    ],
)
def test_an_ip_literal_sent_as_a_domain_is_reported_as_the_ip(
    name: str, host: str, address_type: AddressType
) -> None:
    request = b"\x05\x01\x00\x03" + bytes([len(name)]) + name.encode() + b"\x00\x50"
    _, found, _ = feed(encode_greeting([NO_AUTH]) + request)
    assert found == [ConnectRequested(host, 80, address_type)]


def test_the_rsv_byte_is_not_checked() -> None:
    request = bytearray(encode_connect("192.0.2.1", 80))
    request[2] = 0x7F
    _, found, _ = feed(encode_greeting([NO_AUTH]) + bytes(request))
    assert found == [ConnectRequested("192.0.2.1", 80, AddressType.IPV4)]


# -- username/password (RFC 1929) -------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_username_password_accepted(bytewise: bool) -> None:
    data = (
        encode_greeting([NO_AUTH, USERPASS])
        + encode_userpass("bob", "hunter2")
        + encode_connect("example.org", 22)
    )
    assert encode_userpass("bob", "hunter2") == b"\x01\x03bob\x07hunter2"
    negotiation, found, out = feed(data, CREDENTIALS, bytewise=bytewise)
    assert out == b"\x05\x02" + b"\x01\x00"  # method 0x02 chosen, then status 0x00
    assert found == [ConnectRequested("example.org", 22, AddressType.DOMAIN)]
    assert negotiation.state is SocksState.WAITING_FOR_EXIT


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("alice", "hunter2", "wrong password for user 'alice'"),
        ("alice", "s3cret!", "wrong password for user 'alice'"),
        ("alice", "", "wrong password for user 'alice'"),
        ("mallory", "s3cret", "unknown user 'mallory'"),
        ("", "s3cret", "unknown user ''"),
    ],
)
def test_username_password_refused(user: str, password: str, reason: str) -> None:
    data = encode_greeting([USERPASS]) + encode_userpass(user, password) + encode_connect("a", 1)
    negotiation, found, out = feed(data, CREDENTIALS)
    assert out == b"\x05\x02" + b"\x01\x01"  # RFC 1929: a non-zero status, then close
    assert the_failure(negotiation, found) == reason


def test_a_user_name_that_is_not_utf8_is_unknown() -> None:
    data = encode_greeting([USERPASS]) + b"\x01\x02\xff\xfe\x06s3cret"
    negotiation, found, out = feed(data, CREDENTIALS)
    assert out.endswith(b"\x01\x01")
    assert the_failure(negotiation, found).startswith("unknown user")


def test_a_bad_subnegotiation_version_is_refused() -> None:
    negotiation, found, out = feed(encode_greeting([USERPASS]) + b"\x05\x05alice", CREDENTIALS)
    assert out == b"\x05\x02\x01\x01"
    assert "RFC 1929 version" in the_failure(negotiation, found)


def test_no_authentication_offered_when_credentials_are_required() -> None:
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + b"\x01\x05alice", CREDENTIALS)
    assert out == b"\x05\xff"  # NO ACCEPTABLE METHODS; the rest is never read
    assert "no acceptable authentication method" in the_failure(negotiation, found)


def test_only_username_password_offered_when_none_is_served() -> None:
    negotiation, found, out = feed(encode_greeting([USERPASS, AuthMethod.GSSAPI]))
    assert out == b"\x05\xff"
    assert "offered 0x01, 0x02" in the_failure(negotiation, found)


def test_a_greeting_that_offers_no_method_is_refused() -> None:
    negotiation, found, out = feed(b"\x05\x00")
    assert out == b"\x05\xff"
    assert "offered none" in the_failure(negotiation, found)


def test_credentials_are_checked_and_copied() -> None:
    users = {"alice": "s3cret"}
    config = SocksServerConfig(credentials=users)
    users["alice"] = "changed"  # the config keeps what it was given
    data = encode_greeting([USERPASS]) + encode_userpass("alice", "s3cret")
    assert feed(data, config)[2] == b"\x05\x02\x01\x00"
    for bad in ({}, {"": "x"}, {"x": ""}, {"x": "p" * 256}):
        with pytest.raises(ValueError):
            SocksServerConfig(credentials=bad)
    with pytest.raises(ValueError):
        SocksServerConfig(max_buffer=MAX_MESSAGE - 1)


# -- refusals: each with its RFC 1928 answer ------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"), [(0x02, "BIND"), (0x03, "UDP_ASSOCIATE"), (0x09, "unknown")]
)
def test_commands_other_than_connect_are_not_supported(command: int, name: str) -> None:
    request = bytearray(encode_connect("192.0.2.1", 80))
    request[1] = command
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + bytes(request))
    assert out == b"\x05\x00" + b"\x05\x07\x00" + ZERO_BOUND
    assert name in the_failure(negotiation, found)


@pytest.mark.parametrize("version", [0x04, 0x00, 0x47])  # SOCKS4, nothing, "GET"
def test_a_greeting_of_another_version_is_dropped_unanswered(version: int) -> None:
    # No SOCKS5 answer: a SOCKS4 or HTTP client would misread it; the adapter closes.
    negotiation, found, out = feed(bytes([version]) + b"\x01\x00\x50\xc0\x00\x02\x01\x00")
    assert out == b""
    assert "not a SOCKS5 greeting" in the_failure(negotiation, found)


def test_a_request_of_another_version_is_a_general_failure() -> None:
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + b"\x04\x01\x00\x50")
    assert out == b"\x05\x00" + b"\x05\x01\x00" + ZERO_BOUND
    assert "not a SOCKS5 request" in the_failure(negotiation, found)


def test_an_unknown_address_type_is_not_supported() -> None:
    data = encode_greeting([NO_AUTH]) + b"\x05\x01\x00\x02\xc0\x00\x02\x01\x00\x50"
    negotiation, found, out = feed(data)
    assert out == b"\x05\x00" + b"\x05\x08\x00" + ZERO_BOUND
    assert "address type 0x02" in the_failure(negotiation, found)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"", "empty domain name"),
        (b"a" * 254, "too long"),
        (b"x" * 64 + b".com", "not a host name"),
        (b"a..b", "not a host name"),
        (b"evil.com\x00.good.com", "not a host name"),
        (b"with space.com", "not a host name"),
        (b"\xff\xfe", "neither ASCII nor valid IDNA"),
        (b"fe80::1%eth0", "scope"),
    ],
)
def test_a_bad_domain_name_is_a_general_failure(name: bytes, reason: str) -> None:
    request = b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x50"
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + request)
    assert out == b"\x05\x00" + b"\x05\x01\x00" + ZERO_BOUND
    assert reason in the_failure(negotiation, found)


def test_the_longest_domain_name_and_a_trailing_dot_are_taken() -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    for name in (longest, longest + ".", "_sip._tcp.example.com"):
        _, found, _ = feed(encode_greeting([NO_AUTH]) + encode_connect(name, 5060))
        assert found == [ConnectRequested(name, 5060, AddressType.DOMAIN)]


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1", "example.com"])
def test_port_zero_is_a_general_failure(host: str) -> None:
    negotiation, found, out = feed(encode_greeting([NO_AUTH]) + encode_connect(host, 0))
    assert out == b"\x05\x00" + b"\x05\x01\x00" + ZERO_BOUND
    assert "port 0" in the_failure(negotiation, found)


def test_bytes_after_a_failure_are_ignored() -> None:
    negotiation = feed(b"\x04")[0]
    negotiation.receive_data(b"\x05\x01\x00" * 100_000)
    assert negotiation.buffered == 0 and negotiation.data_to_send() == b""
    assert negotiation.next_event() is None and negotiation.state is SocksState.FAILED


# -- the reply ------------------------------------------------------------------------------


def waiting(early: bytes = b"") -> SocksNegotiation:
    negotiation, found, _ = feed(encode_greeting([NO_AUTH]) + encode_connect("a.test", 80) + early)
    assert negotiation.state is SocksState.WAITING_FOR_EXIT and len(found) == 1
    return negotiation


@pytest.mark.parametrize(
    ("bound", "wire"),
    [
        (("0.0.0.0", 0), b"\x01\x00\x00\x00\x00\x00\x00"),
        (("203.0.113.9", 54321), b"\x01\xcb\x00\x71\x09\xd4\x31"),
        (("2001:db8::2", 8080), b"\x04\x20\x01\x0d\xb8" + bytes(11) + b"\x02\x1f\x90"),
        (("exit.example", 1), b"\x03\x0cexit.example\x00\x01"),
    ],
)
def test_a_successful_reply_and_its_bound_address(bound: tuple[str, int], wire: bytes) -> None:
    negotiation = waiting()
    negotiation.reply(ReplyCode.SUCCEEDED, bound)
    out = negotiation.data_to_send()
    assert out == b"\x05\x00\x00" + wire  # VER REP RSV ATYP BND.ADDR BND.PORT
    assert parse_reply(out) == (ReplyCode.SUCCEEDED, bound, len(out))
    assert negotiation.state is SocksState.ESTABLISHED


@pytest.mark.parametrize("code", [code for code in ReplyCode if code is not ReplyCode.SUCCEEDED])
def test_a_failed_reply_ends_the_negotiation(code: ReplyCode) -> None:
    negotiation = waiting(b"GET / HTTP/1.1\r\n\r\n")
    negotiation.reply(code)
    assert negotiation.data_to_send() == bytes([5, code, 0]) + ZERO_BOUND
    assert negotiation.state is SocksState.FAILED and negotiation.leftover == b""


def test_reply_in_the_wrong_state_raises() -> None:
    for data in (b"", b"\x05\x01", encode_greeting([NO_AUTH]), b"\x04"):
        with pytest.raises(LocalProtocolError):
            SocksNegotiation().reply(ReplyCode.SUCCEEDED)
        negotiation = feed(data)[0]
        with pytest.raises(LocalProtocolError):
            negotiation.reply(ReplyCode.GENERAL_FAILURE)
    negotiation = waiting()
    negotiation.reply(ReplyCode.SUCCEEDED)
    with pytest.raises(LocalProtocolError):
        negotiation.reply(ReplyCode.SUCCEEDED)  # twice
    with pytest.raises(LocalProtocolError):
        negotiation.receive_data(b"more")  # established: bytes go to the exit instead


@pytest.mark.parametrize("bound", [("192.0.2.1", 65536), ("192.0.2.1", -1), ("x" * 256, 1)])
def test_reply_with_a_bad_bound_address_raises(bound: tuple[str, int]) -> None:
    negotiation = waiting()
    with pytest.raises(LocalProtocolError):
        negotiation.reply(ReplyCode.SUCCEEDED, bound)
    assert negotiation.state is SocksState.WAITING_FOR_EXIT


def test_parse_reply_refuses_malformed_and_incomplete_replies() -> None:
    good = b"\x05\x00\x00" + encode_address("192.0.2.1", 80)
    assert parse_reply(good + b"rest") == (ReplyCode.SUCCEEDED, ("192.0.2.1", 80), len(good))
    for bad in (
        good[:-1],
        good[:3],
        b"\x04" + good[1:],
        b"\x05\x09" + good[2:],
        b"\x05\x00\x00\x02" + good[4:],
    ):
        with pytest.raises(SocksDecodeError):
            parse_reply(bad)
    assert issubclass(SocksDecodeError, ValueError)


# -- early data, and the bound on what is held ------------------------------------------------


def test_pipelined_early_data_ends_in_leftover() -> None:
    early = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    data = encode_greeting([USERPASS]) + encode_userpass("alice", "s3cret")
    data += encode_connect("example.com", 80) + early[:10]
    negotiation, found, out = feed(data, CREDENTIALS)
    assert out == b"\x05\x02\x01\x00" and len(found) == 1
    negotiation.receive_data(early[10:])  # more while the exit connects
    assert negotiation.leftover == early
    negotiation.reply(ReplyCode.SUCCEEDED)
    assert negotiation.leftover == early
    assert negotiation.next_event() is None


def test_too_much_early_data_is_a_general_failure() -> None:
    config = SocksServerConfig(max_buffer=1024)
    negotiation = feed(encode_greeting([NO_AUTH]) + encode_connect("a.test", 80), config)[0]
    negotiation.receive_data(bytes(1024))
    assert negotiation.state is SocksState.WAITING_FOR_EXIT  # exactly max_buffer: held
    negotiation.receive_data(b"!")
    assert negotiation.data_to_send() == b"\x05\x01\x00" + ZERO_BOUND
    assert "over 1024 bytes" in the_failure(negotiation, events(negotiation))
    assert negotiation.buffered == 0
    with pytest.raises(LocalProtocolError):
        negotiation.reply(ReplyCode.SUCCEEDED)  # the adapter drops its exit connection


# -- any split, any input -------------------------------------------------------------------

hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[bytes, SocksServerConfig | None]:
    """A valid handshake (with or without credentials, early data or not), or one that
    breaks off or goes wrong somewhere: the split test needs refusals too."""
    config = draw(st.sampled_from([None, CREDENTIALS]))
    data = encode_greeting(draw(st.lists(st.sampled_from(list(AuthMethod)), min_size=1)))
    if config is not None:
        data += encode_userpass(draw(st.sampled_from(["alice", "bob"])), "hunter2")
    data += encode_connect(draw(hosts), draw(st.integers(0, 65535)))
    data += draw(st.binary(max_size=64))
    return data, config


@settings(max_examples=300, deadline=None)
@given(handshakes(), st.data())
def test_any_split_gives_the_same_events(
    handshake: tuple[bytes, SocksServerConfig | None], data: st.DataObject
) -> None:
    wire, config = handshake
    whole, whole_events, whole_out = feed(wire, config)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)))))
    negotiation = SocksNegotiation(config)
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        negotiation.receive_data(wire[start:end])
        out += negotiation.data_to_send()  # drained as an adapter would, between reads
    assert events(negotiation) == whole_events
    assert out == whole_out
    assert negotiation.state is whole.state and negotiation.leftover == whole.leftover


# Valid messages to start the fuzz from, so that every state gets its share of garbage.
PREFIXES = {
    False: [encode_greeting([NO_AUTH]), encode_connect("a.test", 80)],
    True: [
        encode_greeting([USERPASS]),
        encode_userpass("alice", "s3cret"),
        encode_connect("a.test", 80),
    ],
}


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([None, CREDENTIALS]),
    st.integers(0, 3),
    st.lists(
        st.one_of(
            st.binary(max_size=600),
            # Pieces of messages, and a long read: hypothesis's own binaries are mostly short.
            st.sampled_from([b"\x05\x01\x00", b"\x05\x02\x00\x02", b"\x01\x05alice", bytes(400)]),
        ),
        max_size=12,
    ),
)
def test_random_bytes_never_raise_and_stay_bounded(
    config: SocksServerConfig | None, depth: int, chunks: list[bytes]
) -> None:
    credentials = config.credentials if config else None
    negotiation = SocksNegotiation(SocksServerConfig(credentials=credentials, max_buffer=600))
    for chunk in [b"".join(PREFIXES[config is not None][:depth]), *chunks]:
        negotiation.receive_data(chunk)  # never ESTABLISHED: this test never calls reply()
        assert negotiation.buffered <= 600
        assert len(negotiation.data_to_send()) <= 2 + 2 + 10
    found = events(negotiation)
    assert len([e for e in found if isinstance(e, ConnectRequested)]) <= 1
    assert len([e for e in found if isinstance(e, NegotiationFailed)]) <= 1
    if negotiation.state is SocksState.FAILED:
        assert isinstance(found[-1], NegotiationFailed)
