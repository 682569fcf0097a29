"""The sans-I/O TURN client against a tiny scripted TURN server, on virtual time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from peer.events import (
    Allocated,
    AllocationClosed,
    AllocationExpired,
    AllocationFailed,
    ChannelBindFailed,
    ChannelBound,
    ChannelExpired,
    DataReceived,
    PermissionCreated,
    PermissionExpired,
    PermissionFailed,
    TurnEvent,
)
from peer.turn_client import TurnClient, TurnClientConfig, TurnState
from rendezvous.turn_auth import rest_credentials
from stunproto import AttrType, ErrorCode, MessageClass, Method, StunMessage, long_term_key
from stunproto.attributes import Address
from stunproto.channel_data import CHANNEL_MIN, decode_channel_data, encode_channel_data
from stunproto.client import RetransmitPolicy
from stunproto.message import new_transaction_id

SERVER: Address = ("192.0.2.1", 3478)
CLIENT: Address = ("198.51.100.7", 40000)
RELAYED: Address = ("192.0.2.1", 50000)
PEER: Address = ("203.0.113.5", 7000)
REALM = "example.org"
SECRET = b"shared secret"
USERNAME, PASSWORD = rest_credentials(SECRET, "alice", 2_000_000_000)
KEY = long_term_key(USERNAME, REALM, PASSWORD)


@dataclass
class FakeTurnServer:
    """Just enough RFC 8656 server: long-term auth with nonces, canned success answers,
    and a record of everything it received."""

    nonce: str = "nonce-1"
    lifetime: int = 600
    silent: bool = False  # swallow everything (a dead or unreachable server)
    refuse: set[int] = field(default_factory=set)  # methods answered 403 after auth
    requests: list[StunMessage] = field(default_factory=list)
    authenticated: list[StunMessage] = field(default_factory=list)
    indications: list[tuple[Address, bytes]] = field(default_factory=list)
    channel_data: list[tuple[int, bytes]] = field(default_factory=list)

    def handle(self, data: bytes) -> list[bytes]:
        if self.silent:
            return []
        decoded = decode_channel_data(data)
        if decoded is not None:
            self.channel_data.append(decoded)
            return []
        message = StunMessage.parse(data)
        if message.message_class is MessageClass.INDICATION:
            assert message.method == Method.SEND
            self.indications.append(
                (message.get(AttrType.XOR_PEER_ADDRESS), message.get(AttrType.DATA))
            )
            return []
        self.requests.append(message)
        if AttrType.MESSAGE_INTEGRITY not in message:
            return [self._error(message, 401, "Unauthorized", (AttrType.REALM, REALM))]
        if message.get(AttrType.USERNAME) != USERNAME or not message.check_integrity(KEY):
            return [self._error(message, 401, "Unauthorized", (AttrType.REALM, REALM))]
        if message.get(AttrType.NONCE) != self.nonce:
            return [self._error(message, 438, "Stale Nonce", (AttrType.REALM, REALM))]
        self.authenticated.append(message)
        if message.method in self.refuse:
            reply = message.reply(MessageClass.ERROR, (AttrType.ERROR_CODE, ErrorCode(403, "No")))
            return [reply.encode(integrity_key=KEY)]
        attributes: list[tuple[int, Any]] = []
        if message.method == Method.ALLOCATE:
            attributes = [
                (AttrType.XOR_RELAYED_ADDRESS, RELAYED),
                (AttrType.XOR_MAPPED_ADDRESS, CLIENT),
                (AttrType.LIFETIME, self.lifetime),
            ]
        elif message.method == Method.REFRESH:
            requested = message.get(AttrType.LIFETIME, self.lifetime)
            attributes = [(AttrType.LIFETIME, 0 if requested == 0 else self.lifetime)]
        reply = message.reply(MessageClass.SUCCESS, *attributes)
        return [reply.encode(integrity_key=KEY, fingerprint=True)]

    def _error(self, request: StunMessage, code: int, reason: str, *extra: Any) -> bytes:
        reply = request.reply(
            MessageClass.ERROR, (AttrType.ERROR_CODE, ErrorCode(code, reason)), *extra,
            (AttrType.NONCE, self.nonce),
        )  # fmt: skip
        return reply.encode(fingerprint=True)

    def methods(self, messages: list[StunMessage] | None = None) -> list[int]:
        return [m.method for m in (self.authenticated if messages is None else messages)]


class Harness:
    def __init__(self, **config: Any) -> None:
        self.server = FakeTurnServer()
        settings: dict[str, Any] = {"server": SERVER, "username": USERNAME, "password": PASSWORD}
        settings.update(config)
        self.client = TurnClient(TurnClientConfig(**settings), rng=random.Random(7))
        self.now = 0.0
        self.events: list[TurnEvent] = []
        self.sent: list[bytes] = []  # every datagram the client sent, in order

    def exchange(self) -> None:
        """Deliver what the client queued, and the answers back, until nothing moves."""
        while out := self.client.datagrams_to_send(self.now):
            for data, destination in out:
                assert destination == SERVER
                self.sent.append(data)
                for reply in self.server.handle(data):
                    assert self.client.receive_datagram(reply, SERVER, self.now)
        self.drain()

    def drain(self) -> None:
        while (event := self.client.next_event()) is not None:
            self.events.append(event)

    def run_until(self, until: float) -> None:
        self.exchange()
        while (timer := self.client.get_timer()) is not None and timer <= until:
            self.now = max(self.now, timer)
            self.client.handle_timer(self.now)
            self.exchange()
        self.now = max(self.now, until)

    def allocate(self) -> Allocated:
        self.client.allocate(self.now)
        self.exchange()
        allocated = self.events[-1]
        assert isinstance(allocated, Allocated)
        return allocated

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def refreshes(self) -> list[float]:
        return [m.get(AttrType.LIFETIME) for m in self.server.authenticated if m.method == 4]


def test_rest_credentials_match_the_coturn_scheme() -> None:
    username, password = rest_credentials(b"s3cret", "bob", 1_700_000_000)
    assert username == "1700000000:bob"
    expected = hmac.new(b"s3cret", b"1700000000:bob", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_allocate_goes_through_the_401_dance_and_signs_every_request() -> None:
    h = Harness()
    allocated = h.allocate()
    assert allocated == Allocated(RELAYED, CLIENT, 600)
    assert h.client.state is TurnState.ALLOCATED and h.client.relayed == RELAYED
    bare, signed = h.server.requests
    assert AttrType.MESSAGE_INTEGRITY not in bare and AttrType.USERNAME not in bare
    assert bare.get(AttrType.REQUESTED_TRANSPORT) == 17 and bare.get(AttrType.LIFETIME) == 600
    assert signed.get(AttrType.REALM) == REALM and signed.get(AttrType.NONCE) == "nonce-1"
    assert signed.transaction_id != bare.transaction_id  # a new transaction, not a retransmit
    # Every later request carries credentials and a valid MESSAGE-INTEGRITY at once.
    h.client.create_permission(PEER[0], h.now)
    h.client.bind_channel(PEER, h.now)
    h.exchange()
    assert h.server.requests[2:] == h.server.authenticated[1:]
    assert h.server.methods()[1:] == [Method.CREATE_PERMISSION, Method.CHANNEL_BIND]


def test_stale_nonce_is_retried_transparently_for_any_request() -> None:
    h = Harness()
    h.allocate()
    commands: list[tuple[str, Callable[[], object]]] = [
        ("nonce-2", lambda: h.client.create_permission(PEER, h.now)),
        ("nonce-3", lambda: h.client.bind_channel(PEER, h.now)),
        ("nonce-4", lambda: h.client.close(h.now)),
    ]
    for nonce, command in commands:
        h.server.nonce = nonce
        before = len(h.server.requests)
        command()
        h.exchange()
        stale, fresh = h.server.requests[before:]
        assert stale.get(AttrType.NONCE) != nonce and fresh.get(AttrType.NONCE) == nonce
    assert [type(e) for e in h.events] == [Allocated, PermissionCreated, ChannelBound,
                                           AllocationClosed]  # fmt: skip
    assert h.refreshes() == [0]


def test_nonce_rotation_on_refresh_keeps_the_allocation() -> None:
    h = Harness()
    h.allocate()
    h.server.nonce = "rotated"
    h.run_until(2000)
    assert not h.of(AllocationExpired) and h.client.state is TurnState.ALLOCATED
    assert h.refreshes() == [600, 600, 600]  # at 540, 1080, 1620


def test_wrong_password_fails_after_one_signed_attempt() -> None:
    h = Harness(password="not the password")
    h.client.allocate(h.now)
    h.exchange()
    assert len(h.server.requests) == 2  # bare, then signed (and refused): no loop
    assert h.events == [AllocationFailed("Unauthorized", 401)]
    assert h.client.state is TurnState.FAILED


def test_endless_stale_nonces_give_up() -> None:
    h = Harness(max_auth_retries=3)
    h.allocate()
    original = h.server.handle

    def always_stale(data: bytes) -> list[bytes]:
        h.server.nonce += "x"
        return original(data)

    h.server.handle = always_stale  # type: ignore[method-assign]
    h.client.create_permission(PEER, h.now)
    h.exchange()
    assert len(h.server.requests) == 2 + 4
    assert h.events[1:] == [PermissionFailed(PEER[0], "Stale Nonce", 438)]


def test_forged_success_is_dropped_and_the_real_answer_still_counts() -> None:
    h = Harness()
    h.allocate()
    h.client.create_permission(PEER, h.now)
    ((data, _),) = h.client.datagrams_to_send(h.now)
    request = StunMessage.parse(data)
    forged = request.reply(MessageClass.SUCCESS).encode(integrity_key=b"wrong key")
    unsigned = request.reply(MessageClass.SUCCESS).encode()
    assert h.client.receive_datagram(forged, SERVER, h.now)
    assert h.client.receive_datagram(unsigned, SERVER, h.now)
    h.drain()
    assert not h.of(PermissionCreated)
    genuine = request.reply(MessageClass.SUCCESS).encode(integrity_key=KEY)
    assert h.client.receive_datagram(genuine, SERVER, h.now)
    h.drain()
    assert h.of(PermissionCreated) == [PermissionCreated(PEER[0])]


def test_unanswered_allocate_fails_after_the_retransmissions() -> None:
    policy = RetransmitPolicy(rto=0.5, max_sends=3, final_wait=2)
    h = Harness(policy=policy)
    h.server.silent = True
    h.client.allocate(h.now)
    h.run_until(100)
    assert h.events == [AllocationFailed("no answer from the TURN server", None)]
    assert len(h.sent) == 3 and h.client.get_timer() is None


def test_allocation_refreshed_before_expiry_then_lost_when_the_server_goes_quiet() -> None:
    h = Harness()
    h.allocate()
    h.run_until(539.9)
    assert h.refreshes() == []
    h.run_until(540)
    assert h.refreshes() == [600]
    h.server.silent = True
    h.run_until(1079.9)
    assert not h.of(AllocationExpired)
    h.run_until(1200)  # refreshes at 1080 go unanswered; the allocation ends at 1140
    assert h.of(AllocationExpired) and h.client.state is TurnState.EXPIRED
    assert h.now >= 1140 and h.client.get_timer() is None
    assert not h.client.send(b"late", PEER, h.now)
    # No stale relayed address: the agent asks for permissions only while there is one (a
    # stale one once made every later introduction raise "allocate first").
    assert h.client.relayed is None


def test_short_lifetime_refreshes_half_way() -> None:
    h = Harness(lifetime=60)
    h.server.lifetime = 60
    h.allocate()
    h.run_until(100)
    assert h.refreshes() == [60, 60, 60]  # at 30, 60, 90: lifetime - 60 s would be 0


def test_permission_refreshed_only_while_in_use() -> None:
    h = Harness(channels=False)
    h.allocate()
    h.client.create_permission(PEER, h.now)
    h.run_until(100)
    h.client.send(b"x", PEER, h.now)  # used during the first lifetime
    h.run_until(250)
    permissions = [m for m in h.server.authenticated if m.method == Method.CREATE_PERMISSION]
    assert len(permissions) == 2  # created at 0, refreshed at 240
    h.run_until(539.9)  # idle since 100: no refresh at 480 ...
    permissions = [m for m in h.server.authenticated if m.method == Method.CREATE_PERMISSION]
    assert len(permissions) == 2 and h.client.has_permission(PEER[0], h.now)
    h.run_until(540)  # ... and it lapses when the server drops it
    assert h.of(PermissionExpired) == [PermissionExpired(PEER[0])]
    assert not h.client.has_permission(PEER[0], h.now)
    # The next send reinstalls it, the request going out ahead of the data.
    h.sent.clear()
    h.client.send(b"again", PEER, h.now)
    h.exchange()
    first, second = (StunMessage.parse(d) for d in h.sent)
    assert first.method == Method.CREATE_PERMISSION and second.method == Method.SEND
    assert h.server.indications[-1] == (PEER, b"again")


def test_received_data_counts_as_use() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    # Only the peer talks (ChannelData in), every 200 s: both leases stay up.
    for t in range(200, 1300, 200):
        h.run_until(t)
        assert h.client.receive_datagram(encode_channel_data(channel, b"in"), SERVER, h.now)
    h.run_until(1300)
    methods = h.server.methods()
    assert methods.count(Method.CHANNEL_BIND) == 3  # at 0, 540, 1080
    assert methods.count(Method.CREATE_PERMISSION) >= 3  # between the channel refreshes
    assert not h.of(PermissionExpired) and not h.of(ChannelExpired)
    assert h.client.channel_for(PEER, h.now) == channel


def test_idle_channel_lapses_and_send_rebinds_the_same_number() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    other = h.client.bind_channel(("203.0.113.6", 1), h.now)
    assert (channel, other) == (CHANNEL_MIN, CHANNEL_MIN + 1)
    h.run_until(700)
    assert ChannelExpired(PEER, channel) in h.events
    assert h.server.methods().count(Method.CHANNEL_BIND) == 2  # never refreshed
    assert h.client.channel_for(PEER, h.now) is None
    h.client.send(b"via indication", PEER, h.now)  # the rebind is in flight meanwhile
    h.exchange()
    assert h.server.indications[-1] == (PEER, b"via indication")
    assert h.client.channel_for(PEER, h.now) == channel
    h.client.send(b"via channel", PEER, h.now)
    h.exchange()
    assert h.server.channel_data[-1] == (channel, b"via channel")


def test_send_picks_channel_data_or_send_indication() -> None:
    h = Harness(channels=False)
    h.allocate()
    h.client.send(b"one", PEER, h.now)  # no permission yet: installed on the way
    h.exchange()
    assert h.server.indications == [(PEER, b"one")]
    assert h.of(PermissionCreated) == [PermissionCreated(PEER[0])]
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    h.client.send(b"two", PEER, h.now)
    h.client.send(b"three", ("203.0.113.5", 7001), h.now)  # same IP, no channel
    h.exchange()
    assert h.server.channel_data == [(channel, b"two")]
    assert h.server.indications[-1] == (("203.0.113.5", 7001), b"three")
    assert h.server.methods().count(Method.CREATE_PERMISSION) == 1  # IP already permitted


def test_the_first_send_to_a_peer_binds_a_channel_that_later_data_rides() -> None:
    h = Harness(channels=True)
    h.allocate()
    h.client.send(b"one", PEER, h.now)  # ChannelBind goes out first, the data beside it
    h.exchange()
    assert Method.CHANNEL_BIND in h.server.methods()
    assert h.server.indications == [(PEER, b"one")]  # not bound yet when it was sent
    h.client.send(b"two", PEER, h.now)
    h.exchange()
    assert h.server.channel_data == [(h.client.channel_for(PEER, h.now), b"two")]
    assert h.server.methods().count(Method.CHANNEL_BIND) == 1


def data_indication(peer: Address, payload: bytes) -> bytes:
    message = StunMessage(
        Method.DATA, MessageClass.INDICATION, new_transaction_id(),
        ((AttrType.XOR_PEER_ADDRESS, peer), (AttrType.DATA, payload)),
    )  # fmt: skip
    return message.encode(fingerprint=True)


def test_data_indication_and_channel_data_are_decoded() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    assert h.client.receive_datagram(data_indication(PEER, b"indicated"), SERVER, h.now)
    assert h.client.receive_datagram(encode_channel_data(channel, b"chan"), SERVER, h.now)
    padded = encode_channel_data(channel, b"abcde") + b"\x00\x00\x00"  # optional UDP padding
    assert h.client.receive_datagram(padded, SERVER, h.now)
    h.drain()
    assert h.of(DataReceived) == [
        DataReceived(PEER, b"indicated", None),
        DataReceived(PEER, b"chan", channel),
        DataReceived(PEER, b"abcde", channel),
    ]


def test_only_its_own_datagrams_are_consumed() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    others = StunMessage(Method.BINDING, MessageClass.SUCCESS, new_transaction_id()).encode()
    rendezvous = StunMessage(0xC04, MessageClass.REQUEST, new_transaction_id()).encode()
    assert not h.client.receive_datagram(others, SERVER, h.now)  # someone else's transaction
    assert not h.client.receive_datagram(rendezvous, SERVER, h.now)
    chunk = encode_channel_data(channel, b"x")
    assert not h.client.receive_datagram(chunk, ("192.0.2.9", 3478), h.now)  # not the server
    assert not h.client.receive_datagram(b"\xa3peer traffic", SERVER, h.now)
    h.drain()
    assert not h.of(DataReceived)


def test_malformed_channel_data_is_dropped() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    for data in [
        encode_channel_data(channel, b"abc")[:-1],  # length runs past the datagram
        encode_channel_data(CHANNEL_MIN + 7, b"unbound"),
        b"\x40\x00\x00",
        data_indication(PEER, b"x")[:-4],
    ]:
        h.client.receive_datagram(data, SERVER, h.now)
    h.drain()
    assert not h.of(DataReceived)


@given(st.binary(max_size=120), st.integers(0, 3))
def test_garbage_from_the_server_never_raises(data: bytes, prefix: int) -> None:
    h = Harness()
    h.allocate()
    h.client.bind_channel(PEER, h.now)
    pending = h.client.datagrams_to_send(h.now)[0][0]
    # Prefixes that reach deeper parsers: ChannelData, a STUN header with our transaction id.
    heads = [b"", b"\x40\x00", pending[:20], b"\x01\x17" + len(data).to_bytes(2, "big")]
    datagram = heads[prefix] + data
    if prefix == 2:
        datagram = datagram[:2] + len(data).to_bytes(2, "big") + datagram[4:]
    assert isinstance(h.client.receive_datagram(datagram, SERVER, h.now), bool)
    h.client.handle_timer(h.now + 1)
    h.drain()


def test_close_releases_the_allocation_and_stops_timers() -> None:
    h = Harness()
    h.allocate()
    h.client.send(b"x", PEER, h.now)
    h.exchange()
    h.client.close(h.now)
    h.exchange()
    assert h.refreshes() == [0]
    assert h.events[-1] == AllocationClosed() and h.client.state is TurnState.CLOSED
    assert h.client.get_timer() is None
    # Reusable: a new allocation skips the bare request (realm and nonce are known).
    before = len(h.server.requests)
    h.allocate()
    assert len(h.server.requests) == before + 1


def test_refused_channel_is_not_asked_for_on_every_send() -> None:
    h = Harness()
    h.allocate()
    h.server.refuse.add(Method.CHANNEL_BIND)
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    assert h.of(ChannelBindFailed) == [ChannelBindFailed(PEER, channel, "No", 403)]
    for _ in range(5):
        h.client.send(b"x", PEER, h.now)  # falls back to Send indications (and a permission)
        h.exchange()
    assert h.server.methods().count(Method.CHANNEL_BIND) == 1
    assert h.server.indications == [(PEER, b"x")] * 5
    assert h.server.methods().count(Method.CREATE_PERMISSION) == 1
    h.server.refuse.clear()
    h.now += 30
    h.client.send(b"later", PEER, h.now)  # time to try the channel again
    h.exchange()
    assert h.server.methods().count(Method.CHANNEL_BIND) == 2
    assert h.client.channel_for(PEER, h.now) == channel


def test_explicit_refresh_is_not_doubled() -> None:
    h = Harness()
    h.allocate()
    h.server.silent = True
    h.client.refresh(h.now)
    h.client.refresh(h.now)
    assert h.client.pending_requests == 1


def test_traffic_after_the_idle_verdict_revives_the_permission() -> None:
    h = Harness()
    h.allocate()
    h.client.create_permission(PEER, h.now)
    h.run_until(260)  # unused at 240: not refreshed, left to lapse at 300 ...
    assert h.server.methods().count(Method.CREATE_PERMISSION) == 1
    # ... but the peer speaks first: refreshed at once, or its next datagrams would be lost.
    assert h.client.receive_datagram(data_indication(PEER, b"late"), SERVER, h.now)
    h.run_until(400)
    assert h.server.methods().count(Method.CREATE_PERMISSION) == 2
    assert not h.of(PermissionExpired) and h.client.has_permission(PEER[0], h.now)


def test_channel_and_its_permission_lapse_together_once() -> None:
    h = Harness()
    h.allocate()
    channel = h.client.bind_channel(PEER, h.now)
    h.exchange()
    h.client.send(b"once", PEER, h.now)
    h.run_until(2000)
    lapses = [e for e in h.events if isinstance(e, PermissionExpired | ChannelExpired)]
    assert lapses == [PermissionExpired(PEER[0]), ChannelExpired(PEER, channel)]
    assert h.server.methods().count(Method.CHANNEL_BIND) == 1  # the idle verdict agrees
