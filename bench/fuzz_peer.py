"""bench/fuzz.py's peer-side targets: the TURN client, the transport behind the channel, a
connected peer session, and the tunnels' parsers (stream requests and replies, SOCKS5,
HTTP virtual hosts)."""

from __future__ import annotations

import random

from fuzzlib import CLIENT, REALM, SERVER, Target, mutate_bytes, seal_stun, stun_attributes

from peer.data_plane import CHALLENGE_PACKET, RESPONSE_PACKET
from peer.handshake import INIT, PROBE_PACKET, RESPONSE
from peer.identity import Identity
from peer.session import SessionState
from peer.session_state import BEFORE_HANDSHAKE
from peer.transport.connection import TransportConnection
from peer.transport.errors import PeerViolation, TransportDecodeError
from peer.transport.frames import AckFrame, MaxData, StreamFrame, encode_packet
from peer.tunnel.http_route import HostDecodeError, head_end, request_host
from peer.tunnel.policy import ExposeConfig, ExposePolicy
from peer.tunnel.socks5 import (
    AuthMethod,
    ConnectRequested,
    ReplyCode,
    SocksNegotiation,
    SocksServerConfig,
    SocksState,
    encode_connect,
    encode_greeting,
    encode_userpass,
)
from peer.tunnel.specs import Protocol, ServiceSpec
from peer.tunnel.wire import (
    OpenReply,
    OpenRequest,
    OpenStatus,
    RequestKind,
    TunnelDecodeError,
    flow_datagram,
    parse_flow_datagram,
    read_length,
)
from peer.turn_client import TurnClient
from peer.turn_config import TurnClientConfig
from stunproto import AttrType, MessageClass, Method, StunMessage
from stunproto.message import long_term_key
from tests.support.sessions import ALICE_PUBLIC as ALICE
from tests.support.sessions import BOB_PUBLIC as BOB
from tests.support.sessions import session_pair

WAITING = SocksState.WAITING_FOR_EXIT
_SOCKS_DONE = (SocksState.ESTABLISHED, SocksState.FAILED)


def _transport_seeds() -> list[bytes]:
    """Decrypted packets: one message, an ACK with flow control, a stream's end."""
    return [
        encode_packet(1, [StreamFrame(0, 0, b"\x00\x00\x00\x05hello")]),
        encode_packet(2, [AckFrame(((0, 3),), 0.001), MaxData(1 << 20)]),
        encode_packet(3, [StreamFrame(2, 0, b"data", fin=True)]),
    ]


class TurnClientTarget(Target):
    """Answers to the client's own pending request (its transaction id), re-sealed with
    its key, so that the parsing behind the integrity check runs."""

    name = "turn-client"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        config = TurnClientConfig(server=SERVER, username="1:alice", password="pw")
        self.client = TurnClient(config, rng=random.Random(1))
        self.key = long_term_key("1:alice", REALM, "pw")
        self.now = 0.0
        self._restart()

    def _restart(self) -> None:
        self.client = TurnClient(self.client.config, rng=random.Random(1))
        self.client.allocate(self.now)
        (request, _), *_ = self.client.datagrams_to_send(self.now)
        tid = request[4:20]
        header = b"\x01\x03\x00\x00" + tid  # Allocate success
        error = b"\x01\x13\x00\x00" + tid  # Allocate error
        relayed = StunMessage(
            Method.ALLOCATE,
            MessageClass.SUCCESS,
            tid[4:],
            (
                (AttrType.XOR_RELAYED_ADDRESS, ("203.0.113.10", 50000)),
                (AttrType.XOR_MAPPED_ADDRESS, CLIENT),
                (AttrType.LIFETIME, 600),
            ),
        ).encode()
        self.seeds = [
            seal_stun(header, stun_attributes(relayed), self.key),
            seal_stun(
                error,
                [
                    (AttrType.ERROR_CODE, b"\x00\x00\x04\x01Unauthorized"),
                    (AttrType.REALM, REALM.encode()),
                    (AttrType.NONCE, b"n1"),
                ],
                None,
            ),
        ]

    def feed(self, data: bytes) -> None:
        self.now += 0.001
        self.client.receive_datagram(data, SERVER, self.now)
        self.client.datagrams_to_send(self.now)
        while self.client.next_event() is not None:
            pass
        if self.rng.random() < 0.01:
            self._restart()


class Transport(Target):
    """The transport behind the channel's authentication: decrypted packets."""

    name = "transport"
    expected = (TransportDecodeError, PeerViolation)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.conn = TransportConnection(initiator=False, now=0.0)
        self.seeds = _transport_seeds()
        self.now = 0.0

    def input(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.1:
            return rng.randbytes(rng.randint(0, 200))
        return mutate_bytes(rng.choice(self.seeds), rng)

    def feed(self, data: bytes) -> None:
        self.now += 0.001
        try:
            self.conn.receive_packet(data, self.now)
        except (TransportDecodeError, PeerViolation):
            self.conn = TransportConnection(initiator=False, now=self.now)  # (closed)
            raise
        self.conn.packets_to_send(self.now)
        while self.conn.next_event() is not None:
            pass


class Session(Target):
    """A connected peer session (bob's, the responder) fed datagrams from alice's
    endpoint: garbage, mutated handshake messages and probes, and channel datagrams sealed
    with alice's real key around mutated transport packets and path probes, so that the
    code behind the channel's authentication runs; now and then a mutated handshake
    message goes to a responder still waiting for one. A session that a protocol error
    closed (as it should) is replaced by a newly connected pair."""

    name = "peer-session"
    stun = False

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.now = 0.0
        # One pair of identities: the handshake messages seeded are valid for the waiting
        # responder too (replays), and a new pair costs no key generation.
        self.identities = (Identity.generate(), Identity.generate())
        self.plaintexts = [*_transport_seeds(), CHALLENGE_PACKET, RESPONSE_PACKET]
        self._connect()

    def _connect(self) -> None:
        """A new pair, connected by one handshake at ``now`` (its messages become seeds)."""
        alice, bob = session_pair(identities=self.identities)
        alice.handle_timer(self.now)
        for _ in range(3):
            for sender, receiver, source in ((alice, bob, ALICE), (bob, alice, BOB)):
                for data, _to, _ in sender.datagrams_to_send(self.now):
                    if data[0] in (INIT, RESPONSE) and len(self.seeds) < 8:
                        self.seeds.append(data)
                    receiver.receive_datagram(data, source, self.now)
        assert bob.state is SessionState.CONNECTED, bob.state
        self.alice, self.bob = alice, bob
        self.waiting = session_pair(identities=self.identities)[1]
        if PROBE_PACKET not in self.seeds:
            self.seeds.append(PROBE_PACKET)

    def input(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            plaintext = rng.choice(self.plaintexts)
            if rng.random() < 0.3:  # (a broken packet closes the session: a new pair)
                plaintext = mutate_bytes(plaintext, rng)
            sealed = self.alice._plane.seal(plaintext)
            return sealed if choice < 0.4 else mutate_bytes(sealed, rng)
        return super().input()

    def feed(self, data: bytes) -> None:
        self.now += 0.001
        now = self.now
        session = self.bob
        if data and data[0] in (INIT, RESPONSE) and self.rng.random() < 0.3:
            session = self.waiting
        session.receive_datagram(data, ALICE, now)
        due = session.get_timer()
        if due is not None and due <= now:
            session.handle_timer(now)
        session.datagrams_to_send(now)
        while session.next_event() is not None:
            pass
        if self.waiting.state not in BEFORE_HANDSHAKE:
            self.waiting = session_pair(identities=self.identities)[1]
        if self.bob.state is SessionState.CLOSED:
            self._connect()


class TunnelWire(Target):
    """A tunnel stream's first bytes as the exposing side reads them: the length, the
    request, the policy's decision; and a reply and a UDP flow datagram, as the forwarding
    side parses them."""

    name = "tunnel-wire"
    stun = False
    expected = (TunnelDecodeError,)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        web = ServiceSpec(name="web", host="127.0.0.1", port=8000)
        self.policy = ExposePolicy(
            ExposeConfig(services=(web,), allow=frozenset({"alice"}), exit=True)
        )
        self.seeds = [
            OpenRequest(RequestKind.SERVICE, "web").encode(),
            OpenRequest(RequestKind.CONNECT, "example.org", 443).encode(),
            OpenRequest(RequestKind.PUBLISH, "web", 8080, Protocol.UDP).encode(),
            OpenRequest(RequestKind.PUBLISH_HTTP, "web@shop.example").encode(),
            OpenReply(OpenStatus.NOT_ALLOWED, "no").encode(),
            OpenReply(OpenStatus.OK).encode(),
            flow_datagram(7, b"payload"),
        ]

    def feed(self, data: bytes) -> None:
        size = read_length(data[:2]) if len(data) >= 2 else 0
        body = data[2 : 2 + size]
        try:
            self.policy.decide(self.rng.choice(("alice", "carol")), OpenRequest.parse(body))
        except TunnelDecodeError:
            OpenReply.parse(body)
        parse_flow_datagram(data)


class Socks(Target):
    """A SOCKS5 client's bytes (greeting, user/password, CONNECT), split anywhere, into
    the server side's negotiation; a negotiation that ends starts again."""

    name = "socks5"
    stun = False

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.config = SocksServerConfig(credentials={"user": "secret"})
        self.plain = SocksServerConfig()
        self.negotiation = SocksNegotiation(self.plain)
        greeting, auth = (
            encode_greeting([AuthMethod.USERNAME_PASSWORD]),
            encode_userpass("user", "secret"),
        )
        self.seeds = [
            encode_greeting([AuthMethod.NO_AUTHENTICATION]) + encode_connect("example.org", 80),
            greeting + auth + encode_connect("2001:db8::1", 443),
            encode_greeting([0, 2]) + encode_connect("192.0.2.1", 22) + b"GET / HTTP/1.0\r\n",
        ]

    def feed(self, data: bytes) -> None:
        negotiation = self.negotiation
        at = 0
        while at < len(data) and negotiation.state not in _SOCKS_DONE:
            step = self.rng.randint(1, 64)
            negotiation.receive_data(data[at : at + step])
            at += step
        negotiation.data_to_send()
        while (event := negotiation.next_event()) is not None:
            if isinstance(event, ConnectRequested) and negotiation.state is WAITING:
                negotiation.reply(self.rng.choice(list(ReplyCode)))
        if negotiation.state in _SOCKS_DONE or self.rng.random() < 0.5:
            config = self.config if self.rng.random() < 0.5 else self.plain
            self.negotiation = SocksNegotiation(config)


class HttpHost(Target):
    """A request head as the publish gateway's virtual hosts read it."""

    name = "http-host"
    stun = False
    expected = (HostDecodeError,)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = [
            b"GET / HTTP/1.1\r\nHost: shop.example:8080\r\nAccept: */*\r\n\r\n",
            b"POST /x HTTP/1.0\r\nhost: [2001:db8::1]\r\nContent-Length: 3\r\n\r\nabc",
        ]

    def feed(self, data: bytes) -> None:
        end = head_end(data)
        if end is not None:
            request_host(data[:end])
