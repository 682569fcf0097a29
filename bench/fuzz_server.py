"""bench/fuzz.py's server-side targets: STUN and rendezvous parsing, TCP framing, and the
whole rendezvous core (STUN, rendezvous protocol, TURN server) as one datagram handler."""

from __future__ import annotations

import random

from fuzzlib import CLIENT, REALM, SECRET, SERVER, Target

from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import UdpSocket
from rendezvous.turn_auth import rest_credentials
from rendezvous.turn_config import TurnConfig
from rvproto.messages import RvAttr, RvMethod, parse_rv, rv_message
from stunproto import AttrType, FramingError, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.framing import StreamDecoder
from stunproto.message import long_term_key, new_transaction_id


def stun_seeds() -> list[bytes]:
    tid = new_transaction_id
    return [
        StunMessage(Method.BINDING, MessageClass.REQUEST, tid(), ()).encode(),
        StunMessage(
            Method.BINDING, MessageClass.SUCCESS, tid(), ((AttrType.XOR_MAPPED_ADDRESS, CLIENT),)
        ).encode(fingerprint=True),
        StunMessage(
            Method.BINDING,
            MessageClass.REQUEST,
            tid(),
            ((AttrType.PADDING, bytes(500)), (AttrType.RESPONSE_PORT, 4000)),
        ).encode(fingerprint=True),
        rv_message(
            RvMethod.LOGIN,
            MessageClass.REQUEST,
            tid(),
            ((RvAttr.PEER_NAME, "alice"), (RvAttr.PUBLIC_KEY, bytes(32))),
        ).encode(),
    ]


class StunParse(Target):
    name = "stun"
    expected = (StunDecodeError,)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = stun_seeds()

    def feed(self, data: bytes) -> None:
        StunMessage.parse(data)


class RvParse(StunParse):
    name = "rendezvous-parse"

    def feed(self, data: bytes) -> None:
        parse_rv(data)


class Framing(StunParse):
    name = "tcp-framing"
    expected = (FramingError,)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.decoder = StreamDecoder()

    def feed(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except FramingError:
            self.decoder = StreamDecoder()  # (the connection would be dropped)
            raise


class Core(Target):
    """The whole rendezvous (STUN, rendezvous protocol, TURN) as one datagram handler; it
    contains every exception, so a crash is a datagram it counted as failed."""

    name = "rendezvous-core"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        turn = TurnConfig(realm=REALM, shared_secret=SECRET, relay_ip="203.0.113.10")
        config = RendezvousConfig(stun=StunServiceConfig(primary=SERVER))
        self.core = RendezvousCore(config, NameRegistry(), turn=turn, random_bytes=rng.randbytes)
        username, password = rest_credentials(SECRET, "alice", 2_000_000_000)
        self.key = long_term_key(username, REALM, password)
        self._username = username
        self.now = 0.0
        self._fed = 0
        self._fresh_seeds()

    def _exchange(self, data: bytes) -> list[bytes]:
        self.core.receive_datagram(data, CLIENT, UdpSocket(SERVER), self.now)
        for relay in self.core.relays_to_open():  # (as the adapter does: bound, so answered)
            self.core.relay_opened(relay, self.now)
        return [t.data for t in self.core.datagrams_to_send(self.now) if t.destination == CLIENT]

    def _fresh_seeds(self) -> None:
        """Seeds that pass authentication now: a TURN Allocate with a nonce the server
        issued to CLIENT, and a logged-in peer's signed REFRESH and CONNECT (their
        integrity is the session key), so that mutations re-sealed with the right key reach
        the code behind the checks. Nonces and sessions age: made again now and then."""
        creds = [(AttrType.USERNAME, self._username), (AttrType.REALM, REALM)]

        def allocate(nonce: str) -> bytes:
            attributes = ((AttrType.REQUESTED_TRANSPORT, 17), *creds, (AttrType.NONCE, nonce))
            message = StunMessage(
                Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), attributes
            )
            return message.encode(integrity_key=self.key)

        nonce = "none"
        for answer in self._exchange(allocate(nonce)):
            nonce = StunMessage.parse(answer).get(AttrType.NONCE) or nonce
        allocate_now = allocate(nonce)
        send = StunMessage(
            Method.SEND,
            MessageClass.INDICATION,
            new_transaction_id(),
            ((AttrType.XOR_PEER_ADDRESS, ("192.0.2.9", 5000)), (AttrType.DATA, b"x" * 100)),
        ).encode()
        self.seeds = [*stun_seeds(), allocate_now, send, *self._session_seeds()]

    def _session_seeds(self) -> list[bytes]:
        identity = Identity.generate()
        name = f"fuzz{self._fed}"
        config = RendezvousClientConfig(server=SERVER, name=name, public_key=identity.public_key)
        client = RendezvousClient(config, identity.x25519_private)
        client.login(self.now)
        seeds = []
        for _ in range(3):
            for data, _ in client.datagrams_to_send(self.now):
                seeds.append(data)
                for answer in self._exchange(data):
                    client.receive_datagram(answer, SERVER, self.now)
        if client.session_key is None:
            return seeds
        client.connect("nobody", self.now)
        for data, _ in client.datagrams_to_send(self.now):
            seeds.append(data)
            self.keys[data] = client.session_key
        return seeds

    def feed(self, data: bytes) -> None:
        self.now += 0.001
        self._fed += 1
        if self._fed % 20_000 == 0:
            self.keys.clear()
            self._fresh_seeds()
        self._exchange(data)

    def failures(self) -> int:
        return self.core._failures
