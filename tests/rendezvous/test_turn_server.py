"""The sans-I/O TURN server (RFC 8656 over UDP, TURN REST API credentials), with virtual
time."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.ratelimit import RateLimit
from rendezvous.routes import RelaySocket, TcpConnection, Transmit, UdpSocket
from rendezvous.turn_auth import rest_credentials
from rendezvous.turn_config import (
    CHANNEL_LIFETIME,
    PERMISSION_LIFETIME,
    TurnConfig,
    is_turn_datagram,
)
from rendezvous.turn_server import TurnServer
from stunproto import AttrType, ErrorCode, MessageClass, Method, StunMessage, long_term_key
from stunproto.message import new_transaction_id

SECRET = b"rest-secret"
REALM = "example.org"
LOCAL = ("203.0.113.1", 3478)
VIA = UdpSocket(LOCAL)  # the client-facing socket the clients' datagrams come in on
RELAY_IP = "203.0.113.1"
CLIENT = ("198.51.100.7", 40000)
PEER = ("192.0.2.9", 5000)
WALL = 1_700_000_000.0  # wall-clock "now" for credential expiry
Address = tuple[str, int]


def _config(**kw: object) -> TurnConfig:
    base: dict[str, object] = {
        "realm": REALM,
        "shared_secret": SECRET,
        "relay_ip": RELAY_IP,
        "relay_ports": range(50000, 50010),
    }
    base.update(kw)
    return TurnConfig(**base)  # type: ignore[arg-type]


def _server(**kw: object) -> TurnServer:
    return TurnServer(_config(**kw))


@dataclass
class Client:
    """A TURN client speaking raw messages to a TurnServer, with virtual clocks."""

    server: TurnServer
    source: Address = CLIENT
    name: str = "alice"
    expires: float = WALL + 3600
    secret: bytes = SECRET
    nonce: str | None = None
    via: UdpSocket | TcpConnection = VIA  # the route the client's datagrams come by
    # Play the adapter: bind (relay_opened) every relay socket the server asks for, so that
    # an Allocate's held success answer comes back at once; False leaves it to the test.
    open_relays: bool = True
    opened: list[Address] = field(default_factory=list)
    username: str = field(init=False)
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.username, password = rest_credentials(self.secret, self.name, int(self.expires))
        self.key = long_term_key(self.username, REALM, password)

    def raw(self, data: bytes, now: float = 0.0, wall: float = WALL) -> list[Transmit]:
        sends = self.server.handle(data, self.source, self.via, now, wall)
        if self.open_relays:
            for relay in self.server.relays_to_open():
                self.opened.append(relay)
                sends += self.server.relay_opened(relay, now)
        return sends

    def send(
        self,
        method: int,
        *attrs: tuple[int, object],
        now: float = 0.0,
        wall: float = WALL,
        tid: bytes | None = None,
        sign: bool = True,
    ) -> StunMessage:
        """One request; returns the parsed answer (remembering any NONCE offered)."""
        creds: tuple[tuple[int, object], ...] = ()
        if sign:
            creds = ((AttrType.USERNAME, self.username), (AttrType.REALM, REALM))
            creds += ((AttrType.NONCE, self.nonce or "none"),)
        request = StunMessage(
            method, MessageClass.REQUEST, tid or new_transaction_id(), (*attrs, *creds)
        )
        data = request.encode(integrity_key=self.key if sign else None, fingerprint=True)
        sends = self.raw(data, now, wall)
        assert len(sends) == 1
        assert sends[0].via == self.via and sends[0].destination == self.source
        answer = StunMessage.parse(sends[0].data)
        assert answer.transaction_id == request.transaction_id
        nonce = answer.get(AttrType.NONCE)
        if nonce is not None:
            self.nonce = nonce
        return answer

    def call(self, method: int, *attrs: tuple[int, object], now: float = 0.0) -> StunMessage:
        """A request with the 401/438 dance done first if needed."""
        answer = self.send(method, *attrs, now=now)
        if _code(answer) in (401, 438) and answer.get(AttrType.NONCE):
            answer = self.send(method, *attrs, now=now)
        return answer

    def allocate(self, *attrs: tuple[int, object], now: float = 0.0) -> StunMessage:
        answer = self.call(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), *attrs, now=now)
        if answer.message_class is MessageClass.SUCCESS:
            assert answer.check_integrity(self.key)
        return answer

    def indication(self, peer: Address, data: bytes, now: float = 0.0) -> list[Transmit]:
        message = StunMessage(
            Method.SEND,
            MessageClass.INDICATION,
            new_transaction_id(),
            ((AttrType.XOR_PEER_ADDRESS, peer), (AttrType.DATA, data)),
        )
        return self.raw(message.encode(), now)


def _allocate_request(client: Client, tid: bytes | None = None) -> bytes:
    """A signed Allocate request (the client's nonce must be current)."""
    attrs = (
        (AttrType.REQUESTED_TRANSPORT, 17),
        (AttrType.USERNAME, client.username),
        (AttrType.REALM, REALM),
        (AttrType.NONCE, client.nonce or "none"),
    )
    request = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, tid or new_transaction_id(), attrs)
    return request.encode(integrity_key=client.key, fingerprint=True)


def _code(message: StunMessage) -> int | None:
    error = message.get(AttrType.ERROR_CODE)
    return error.code if isinstance(error, ErrorCode) else None


def _relayed(answer: StunMessage) -> Address:
    relay = answer.get(AttrType.XOR_RELAYED_ADDRESS)
    assert relay is not None, answer
    return relay  # type: ignore[no-any-return]


def _allocated(server: TurnServer, **kw: object) -> tuple[Client, Address]:
    client = Client(server, **kw)  # type: ignore[arg-type]
    answer = client.allocate()
    assert answer.message_class is MessageClass.SUCCESS, answer
    return client, _relayed(answer)


# ---------------------------------------------------------------------- authentication


def test_allocate_without_integrity_gets_401_with_realm_and_nonce_then_succeeds() -> None:
    server = _server()
    client = Client(server)
    challenge = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), sign=False)
    assert _code(challenge) == 401
    assert challenge.get(AttrType.REALM) == REALM
    assert challenge.get(AttrType.NONCE)
    assert AttrType.MESSAGE_INTEGRITY not in challenge
    answer = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17))
    assert answer.message_class is MessageClass.SUCCESS
    assert answer.check_integrity(client.key)
    relay = _relayed(answer)
    assert relay[0] == RELAY_IP and relay[1] in range(50000, 50010)
    assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == CLIENT
    assert answer.get(AttrType.LIFETIME) == 600
    assert client.opened == [relay]
    assert server.relays_to_open() == []


def test_stale_foreign_and_garbage_nonces_get_438_with_a_fresh_nonce() -> None:
    server = _server(nonce_lifetime=30.0)
    client = Client(server)
    client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), sign=False)
    stale = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), now=31.0)
    assert _code(stale) == 438
    assert stale.get(AttrType.REALM) == REALM and stale.get(AttrType.NONCE)
    assert client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), now=31.0).get(
        AttrType.XOR_RELAYED_ADDRESS
    )
    # A nonce issued to another source, and garbage, are not valid here either.
    other = Client(server, source=("198.51.100.8", 40000))
    other.nonce = client.nonce
    assert _code(other.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), now=31.0)) == 438
    # (A non-ASCII MAC once raised TypeError in the comparison, with valid integrity.)
    garbage_nonces = ("", "zz.zz", "ffffffffffffffffffff.00", "1." + "0" * 24, "1.\u00e9\u00e9")
    for garbage in garbage_nonces:
        other.nonce = garbage
        answer = other.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), now=31.0)
        assert _code(answer) == 438


@pytest.mark.parametrize(
    "client_kw",
    [
        {"expires": WALL - 1},  # expired REST username
        {"secret": b"wrong-secret"},  # password not derived from our secret
    ],
)
def test_expired_or_wrongly_signed_rest_credentials_get_401(client_kw: dict[str, object]) -> None:
    server = _server()
    client = Client(server, **client_kw)  # type: ignore[arg-type]
    answer = client.allocate()
    assert _code(answer) == 401
    assert answer.get(AttrType.NONCE) and answer.get(AttrType.REALM) == REALM
    assert server.allocation_count == 0


def test_malformed_usernames_and_wrong_realm_get_401() -> None:
    server = _server()
    for username in ("alice", ":alice", "12x4:alice", "9" * 5000 + ":alice", "١٢٣:x"):
        client = Client(server)
        client.username = username
        assert _code(client.allocate()) == 401
    client = Client(server)
    client.send(Method.ALLOCATE, sign=False)
    request = StunMessage(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        new_transaction_id(),
        (
            (AttrType.REQUESTED_TRANSPORT, 17),
            (AttrType.USERNAME, client.username),
            (AttrType.REALM, "other.realm"),
            (AttrType.NONCE, client.nonce),
        ),
    )
    sends = client.raw(request.encode(integrity_key=client.key))
    assert _code(StunMessage.parse(sends[0].data)) == 401


def test_tampered_request_fails_integrity() -> None:
    server = _server()
    client = Client(server)
    client.send(Method.ALLOCATE, sign=False)
    request = StunMessage(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        new_transaction_id(),
        (
            (AttrType.REQUESTED_TRANSPORT, 17),
            (AttrType.LIFETIME, 100),
            (AttrType.USERNAME, client.username),
            (AttrType.REALM, REALM),
            (AttrType.NONCE, client.nonce),
        ),
    )
    data = bytearray(request.encode(integrity_key=client.key))
    data[35] ^= 1  # LIFETIME's last value byte
    assert _code(StunMessage.parse(client.raw(bytes(data))[0].data)) == 401


# ---------------------------------------------------------------------- allocations


def test_second_allocate_is_437_but_a_retransmission_gets_the_same_answer() -> None:
    server = _server()
    client = Client(server)
    client.send(Method.ALLOCATE, sign=False)
    tid = new_transaction_id()
    first = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), tid=tid)
    again = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), tid=tid, now=1.0)
    assert first.raw == again.raw and first.message_class is MessageClass.SUCCESS
    other = client.send(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17), now=1.0)
    assert _code(other) == 437
    assert other.check_integrity(client.key)
    assert server.allocation_count == 1


def test_allocate_checks_transport_and_unsupported_attributes() -> None:
    client = Client(_server())
    assert _code(client.call(Method.ALLOCATE)) == 400
    assert _code(client.call(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 6))) == 442
    answer = client.allocate((AttrType.DONT_FRAGMENT, b""))
    assert _code(answer) == 420
    assert answer.get(AttrType.UNKNOWN_ATTRIBUTES) == (AttrType.DONT_FRAGMENT,)
    assert _code(client.allocate((AttrType.REQUESTED_ADDRESS_FAMILY, 2))) == 440


def test_refresh_clamps_lifetime_and_zero_deletes() -> None:
    server = _server()
    client, relay = _allocated(server)
    server.relays_to_open()
    assert client.call(Method.REFRESH, (AttrType.LIFETIME, 10)).get(AttrType.LIFETIME) == 600
    assert client.call(Method.REFRESH, (AttrType.LIFETIME, 10**6)).get(AttrType.LIFETIME) == 3600
    assert client.call(Method.REFRESH).get(AttrType.LIFETIME) == 600
    deleted = client.call(Method.REFRESH, (AttrType.LIFETIME, 0))
    assert deleted.message_class is MessageClass.SUCCESS and deleted.get(AttrType.LIFETIME) == 0
    assert server.relays_to_close() == [relay]
    assert server.allocation_count == 0
    assert _code(client.call(Method.REFRESH)) == 437


def test_other_credentials_cannot_refresh_an_allocation() -> None:
    server = _server()
    _allocated(server)
    mallory = Client(server, name="mallory")
    assert _code(mallory.call(Method.REFRESH, (AttrType.LIFETIME, 0))) == 441
    assert server.allocation_count == 1


def test_even_port_with_reservation_token() -> None:
    server = _server(relay_ports=range(50000, 50100))
    first = Client(server)
    answer = first.allocate((AttrType.EVEN_PORT, b"\x80"))
    port = _relayed(answer)[1]
    token = answer.get(AttrType.RESERVATION_TOKEN)
    assert port % 2 == 0 and isinstance(token, bytes) and len(token) == 8
    second = Client(server, source=("198.51.100.7", 40001))
    assert _relayed(second.allocate((AttrType.RESERVATION_TOKEN, token)))[1] == port + 1
    third = Client(server, source=("198.51.100.7", 40002))
    assert _code(third.allocate((AttrType.RESERVATION_TOKEN, token))) == 508  # used up


# ---------------------------------------------------------------------- relaying


def _permit(client: Client, *peers: Address, now: float = 0.0) -> StunMessage:
    attrs = [(AttrType.XOR_PEER_ADDRESS, peer) for peer in peers]
    return client.call(Method.CREATE_PERMISSION, *attrs, now=now)


def test_nothing_is_relayed_without_a_permission() -> None:
    server = _server()
    client, relay = _allocated(server)
    assert server.handle_relayed(relay, b"hello", PEER, 1.0) == []
    assert client.indication(PEER, b"hello", 1.0) == []
    assert server.dropped == 2


def test_permission_by_ip_lets_data_through_both_ways() -> None:
    server = _server()
    client, relay = _allocated(server)
    assert _permit(client, PEER).message_class is MessageClass.SUCCESS
    assert client.indication(PEER, b"out") == [Transmit(b"out", PEER, RelaySocket(relay))]
    other_port = (PEER[0], 6000)  # permissions are per IP (RFC 8656 section 9)
    relayed_out = [Transmit(b"out2", other_port, RelaySocket(relay))]
    assert client.indication(other_port, b"out2") == relayed_out
    sends = server.handle_relayed(relay, b"in", other_port, 1.0)
    assert len(sends) == 1 and sends[0].via == VIA and sends[0].destination == CLIENT
    data = StunMessage.parse(sends[0].data)
    assert (data.method, data.message_class) == (Method.DATA, MessageClass.INDICATION)
    assert data.get(AttrType.XOR_PEER_ADDRESS) == other_port and data.get(AttrType.DATA) == b"in"
    assert server.handle_relayed(relay, b"in", ("192.0.2.10", 5000), 1.0) == []
    assert client.indication(("192.0.2.10", 5000), b"x") == []


def test_create_permission_rejects_denied_multicast_and_foreign_family_all_or_nothing() -> None:
    server = _server(denied_peers=("10.0.0.0/8",))
    client, _ = _allocated(server)
    assert _code(_permit(client, PEER, ("10.1.2.3", 1))) == 403
    assert _code(_permit(client, ("224.0.0.1", 1))) == 403
    assert _code(_permit(client, ("2001:db8::1", 1))) == 443
    assert _code(client.call(Method.CREATE_PERMISSION)) == 400
    assert client.indication(PEER, b"x") == []  # PEER was not installed by the failed request


def test_channel_bind_and_channel_data_both_ways() -> None:
    server = _server()
    client, relay = _allocated(server)
    bound = client.call(
        Method.CHANNEL_BIND, (AttrType.CHANNEL_NUMBER, 0x4001), (AttrType.XOR_PEER_ADDRESS, PEER)
    )
    assert bound.message_class is MessageClass.SUCCESS
    # The binding installed a permission, and ChannelData needs no padding over UDP.
    relayed_out = [Transmit(b"abc", PEER, RelaySocket(relay))]
    assert client.raw(struct.pack("!HH", 0x4001, 3) + b"abc") == relayed_out
    sends = server.handle_relayed(relay, b"xyz", PEER, 1.0)
    assert sends == [Transmit(struct.pack("!HH", 0x4001, 3) + b"xyz", CLIENT, VIA)]
    # A peer at the same IP without a channel still gets Data indications.
    other = server.handle_relayed(relay, b"q", (PEER[0], 7), 1.0)
    assert StunMessage.parse(other[0].data).method == Method.DATA
    # Unbound channel, truncated ChannelData: dropped.
    assert client.raw(struct.pack("!HH", 0x4002, 3) + b"abc") == []
    assert client.raw(struct.pack("!HH", 0x4001, 9) + b"abc") == []


def test_channel_bind_rules() -> None:
    server = _server()
    client, _ = _allocated(server)
    other_peer = ("192.0.2.10", 5000)

    def bind(number: int, peer: Address) -> int | None:
        return _code(
            client.call(
                Method.CHANNEL_BIND,
                (AttrType.CHANNEL_NUMBER, number),
                (AttrType.XOR_PEER_ADDRESS, peer),
            )
        )

    assert bind(0x4000, PEER) is None
    assert bind(0x4000, PEER) is None  # refresh
    assert bind(0x4000, other_peer) == 400  # channel taken by another peer
    assert bind(0x4001, PEER) == 400  # peer has another channel
    assert bind(0x3FFF, other_peer) == 400
    assert bind(0x8000, other_peer) == 400
    assert bind(0x7FFF, other_peer) is None  # RFC 5766 range, as coturn clients use
    strict = Client(_server(rfc5766_channels=False))
    strict.allocate()
    answer = strict.call(
        Method.CHANNEL_BIND, (AttrType.CHANNEL_NUMBER, 0x5000), (AttrType.XOR_PEER_ADDRESS, PEER)
    )
    assert _code(answer) == 400
    assert _code(client.call(Method.CHANNEL_BIND, (AttrType.CHANNEL_NUMBER, 0x4005))) == 400


# ---------------------------------------------------------------------- expiry (virtual time)


def test_permissions_channels_and_allocations_expire() -> None:
    server = _server()
    client, relay = _allocated(server)
    server.relays_to_open()
    client.call(
        Method.CHANNEL_BIND, (AttrType.CHANNEL_NUMBER, 0x4001), (AttrType.XOR_PEER_ADDRESS, PEER)
    )
    other = ("192.0.2.10", 1)
    _permit(client, other)
    assert server.get_timer() is not None
    # The permission for PEER is refreshed, that for `other` is not.
    _permit(client, PEER, now=PERMISSION_LIFETIME - 10)
    _run_timers(server, PERMISSION_LIFETIME + 1)
    assert server.handle_relayed(relay, b"x", other, PERMISSION_LIFETIME + 1) == []
    assert server.handle_relayed(relay, b"x", PEER, PERMISSION_LIFETIME + 1)
    # Channel bindings last 600 s; without a refresh ChannelData stops.
    _permit(client, PEER, now=2 * PERMISSION_LIFETIME - 20)
    client.call(Method.REFRESH, (AttrType.LIFETIME, 3600), now=CHANNEL_LIFETIME - 5)
    _run_timers(server, CHANNEL_LIFETIME + 1)
    assert client.raw(struct.pack("!HH", 0x4001, 1) + b"a", CHANNEL_LIFETIME + 1) == []
    sends = server.handle_relayed(relay, b"x", PEER, CHANNEL_LIFETIME + 1)
    assert StunMessage.parse(sends[0].data).method == Method.DATA
    # The allocation itself: 3600 s from the refresh.
    _run_timers(server, CHANNEL_LIFETIME - 5 + 3600 + 1)
    assert server.allocation_count == 0
    assert server.relays_to_close() == [relay]
    _run_timers(server, 10_000)
    assert server.get_timer() is None  # idle: no timer


def test_expired_state_is_refused_even_before_a_sweep() -> None:
    server = _server()
    client, relay = _allocated(server)
    _permit(client, PEER)
    assert server.handle_relayed(relay, b"x", PEER, PERMISSION_LIFETIME + 0.5) == []
    assert server.handle_relayed(relay, b"x", PEER, 601.0) == []
    assert _code(client.call(Method.REFRESH, now=601.0)) == 437


def _run_timers(server: TurnServer, until: float) -> None:
    while (at := server.get_timer()) is not None and at <= until:
        server.handle_timer(at)


# ---------------------------------------------------------------------- quotas


def test_per_user_and_global_quotas_and_port_exhaustion() -> None:
    server = _server(max_allocations_per_user=2, max_allocations=3)
    for port in (1, 2):
        assert _allocated(server, source=("198.51.100.7", port))
    assert _code(Client(server, source=("198.51.100.7", 3)).allocate()) == 486
    _allocated(server, source=("198.51.100.8", 1), name="bob")
    assert _code(Client(server, source=("198.51.100.8", 2), name="carol").allocate()) == 508
    small = _server(relay_ports=range(50000, 50002))
    _allocated(small, source=("198.51.100.7", 1))
    _allocated(small, source=("198.51.100.7", 2), name="bob")
    assert _code(Client(small, source=("198.51.100.7", 3), name="carol").allocate()) == 508


def test_allocations_per_source_are_limited_whatever_the_credentials() -> None:
    # Credentials from a few free logins once took every relay socket from one address.
    server = _server(max_allocations_per_source=2, max_allocations_per_user=10)
    for port, name in ((1, "alice"), (2, "bob")):
        _allocated(server, source=("198.51.100.7", port), name=name)
    assert _code(Client(server, source=("198.51.100.7", 3), name="carol").allocate()) == 486
    # One IPv6 /64 is one source; another address is another.
    v6 = _server(relay_ip="2001:db8::10", max_allocations_per_source=1)
    _allocated(v6, source=("2001:db8:1:2::1", 1))
    assert _code(Client(v6, source=("2001:db8:1:2::99", 1), name="bob").allocate()) == 486
    _allocated(v6, source=("2001:db8:1:3::1", 1), name="carol")
    _allocated(server, source=("198.51.100.8", 1), name="dave")


def test_permission_quota() -> None:
    server = _server(max_peers_per_allocation=2)
    client, _ = _allocated(server)
    assert _permit(client, ("192.0.2.1", 1), ("192.0.2.2", 1)).message_class.name == "SUCCESS"
    assert _code(_permit(client, ("192.0.2.3", 1))) == 508
    assert _permit(client, ("192.0.2.1", 9)).message_class is MessageClass.SUCCESS  # refresh


def test_bandwidth_limit_drops_the_excess() -> None:
    server = _server(bandwidth=1000.0, bandwidth_burst=1000.0)
    client, relay = _allocated(server)
    _permit(client, PEER)
    passed = sum(len(client.indication(PEER, bytes(200), 1.0)) for _ in range(10))
    assert passed == 5
    assert server.handle_relayed(relay, bytes(200), PEER, 1.0) == []  # both ways share it
    assert len(server.handle_relayed(relay, bytes(200), PEER, 1.25)) == 1  # 0.25 s refilled 250


def test_send_indications_are_data_not_requests_for_the_rate_limit() -> None:
    # A limit of 10 requests a second: an allocated client's Send indications pass it
    # (the bandwidth quota governs them, as it does ChannelData) ...
    server = _server(rate_limit=RateLimit(rate=10.0, burst=10.0))
    client, _ = _allocated(server)
    _permit(client, PEER)
    assert sum(len(client.indication(PEER, bytes(100), 1.0)) for _ in range(1000)) == 1000
    # ... while requests still meet the limit, and a stranger's indications are dropped.
    stranger = Client(server, source=("198.51.100.99", 5), name="mallory")
    binding = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    assert sum(len(stranger.raw(binding, 1.0)) for _ in range(20)) == 10
    assert sum(len(stranger.indication(PEER, bytes(100), 2.0)) for _ in range(50)) == 0


# ---------------------------------------------------------------------- robustness


def test_is_turn_datagram() -> None:
    allocate = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id()).encode()
    binding = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    assert is_turn_datagram(allocate) and not is_turn_datagram(binding)
    assert is_turn_datagram(b"\x40\x00\x00\x00") and is_turn_datagram(b"\x7f\xff\x00\x00")
    assert not is_turn_datagram(b"\x7f\xff\x00\x00", rfc5766_channels=False)
    assert not is_turn_datagram(b"") and not is_turn_datagram(b"\x80" * 20)


def test_binding_and_unknown_methods_and_responses() -> None:
    client = Client(_server())
    answer = client.send(Method.BINDING, sign=False)
    assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == CLIENT
    assert _code(client.send(0x0ABC, sign=False)) == 400
    response = StunMessage(Method.ALLOCATE, MessageClass.SUCCESS, new_transaction_id())
    assert client.raw(response.encode()) == []
    legacy = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, b"\x01" * 16)
    assert client.raw(legacy.encode()) == []


def _valid_datagrams() -> list[bytes]:
    server = _server()
    client, _ = _allocated(server)
    tid = new_transaction_id()
    attrs = (
        (AttrType.USERNAME, client.username),
        (AttrType.REALM, REALM),
        (AttrType.NONCE, client.nonce),
    )
    return [
        StunMessage(
            Method.ALLOCATE,
            MessageClass.REQUEST,
            tid,
            ((AttrType.REQUESTED_TRANSPORT, 17), (AttrType.LIFETIME, 5), *attrs),
        ).encode(integrity_key=client.key, fingerprint=True),
        StunMessage(
            Method.CHANNEL_BIND,
            MessageClass.REQUEST,
            tid,
            ((AttrType.CHANNEL_NUMBER, 0x4000), (AttrType.XOR_PEER_ADDRESS, PEER), *attrs),
        ).encode(integrity_key=client.key),
        StunMessage(
            Method.SEND,
            MessageClass.INDICATION,
            tid,
            ((AttrType.XOR_PEER_ADDRESS, PEER), (AttrType.DATA, b"data")),
        ).encode(),
        struct.pack("!HH", 0x4000, 4) + b"data",
    ]


_VALID = _valid_datagrams()


@given(
    base=st.sampled_from(_VALID),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, 200),
    junk=st.binary(max_size=40),
)
def test_malformed_input_is_ignored_or_answered_never_raises(
    base: bytes, flips: list[tuple[int, int]], cut: int, junk: bytes
) -> None:
    server = _server()
    client, relay = _allocated(server)
    _permit(client, PEER)
    data = bytearray(base)
    for index, xor in flips:
        if index < len(data):
            data[index] ^= xor
    mutated = bytes(data[: max(cut, 1)]) + junk
    for sample in (mutated, bytes(data), junk):
        for send in client.raw(sample, 1.0):
            assert send.via in (VIA, RelaySocket(relay))
            # Permissions are per IP (RFC 8656 9): a mutated port still reaches the peer's
            # host, never anyone else.
            assert send.destination == CLIENT or send.destination[0] == PEER[0]
        server.handle_relayed(relay, sample, PEER, 1.0)
        server.handle_relayed(("203.0.113.1", 1), sample, PEER, 1.0)


def test_a_relay_port_that_cannot_be_bound_drops_its_allocation() -> None:
    server = _server(relay_ports=range(50000, 50002))
    client = Client(server, open_relays=False)
    client.send(Method.ALLOCATE, sign=False)
    assert client.raw(_allocate_request(client)) == []  # held until the socket is bound
    (relay,) = server.relays_to_open()
    (failed,) = server.relay_failed(relay, 1.0)
    assert _code(StunMessage.parse(failed.data)) == 508
    assert server.allocation_count == 0 and server.relays_to_close() == []
    client.open_relays = True
    assert _code(client.call(Method.REFRESH, now=2.0)) == 437
    # The other port is used next, the failed one only after its cool-down.
    second = _relayed(Client(server, source=("198.51.100.7", 2)).allocate(now=2.0))
    assert second != relay
    assert _code(Client(server, source=("198.51.100.7", 3)).allocate(now=3.0)) == 508


def test_never_relays_into_the_servers_own_non_relay_ports() -> None:
    server = _server()
    client, relay = _allocated(server)
    _permit(client, (RELAY_IP, 0))
    assert client.indication(LOCAL, b"loop") == []  # the TURN/rendezvous port itself
    other_relay = (RELAY_IP, 50009)  # another client's relayed address is a fine peer
    relayed_out = [Transmit(b"hi", other_relay, RelaySocket(relay))]
    assert client.indication(other_relay, b"hi") == relayed_out


def test_private_and_loopback_peers_are_refused_by_default() -> None:
    # A stranger with credentials must not reach services behind the relay.
    client, _ = _allocated(_server())
    for ip in ("127.0.0.1", "10.0.0.5", "192.168.1.1", "169.254.169.254", "172.16.0.9"):
        assert _code(_permit(client, (ip, 53))) == 403, ip
    assert _code(_permit(client, ("198.51.100.20", 53))) is None


def test_a_tcp_client_and_a_udp_client_at_one_address_are_two_five_tuples() -> None:
    server = _server()
    over_udp, udp_relay = _allocated(server)
    over_tcp, tcp_relay = _allocated(server, via=TcpConnection(LOCAL), name="bob")
    assert over_udp.source == over_tcp.source and udp_relay != tcp_relay
    assert server.allocation_count == 2
    for client, relay in ((over_udp, udp_relay), (over_tcp, tcp_relay)):
        _permit(client, PEER)
        # Relayed data goes back to each by its own route.
        (back,) = server.handle_relayed(relay, b"x", PEER, 1.0)
        assert back.via == client.via and back.destination == client.source


def test_a_peer_datagram_too_large_for_a_data_indication_is_dropped() -> None:
    # Up to 65,507 bytes may arrive on a relay socket; with an IPv6 XOR-PEER-ADDRESS the
    # Data indication around the largest once overflowed STUN's 16-bit length.
    server = _server(relay_ip="2001:db8::10")
    client = Client(server, source=("2001:db8::20", 40000))
    relay = _relayed(client.allocate())
    peer = ("2001:db8::99", 5000)
    assert _permit(client, peer).message_class is MessageClass.SUCCESS
    dropped = server.dropped
    assert server.handle_relayed(relay, bytes(65_500), peer, 1.0) == []
    assert server.dropped == dropped + 1
    (sent,) = server.handle_relayed(relay, bytes(65_000), peer, 1.0)
    assert StunMessage.parse(sent.data).get(AttrType.DATA) == bytes(65_000)
