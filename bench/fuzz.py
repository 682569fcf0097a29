"""Fuzzing every parser and sans-I/O handler that takes bytes from the network: random
inputs and mutations of valid ones (bit flips, byte changes, cuts, insertions, repeated or
dropped attributes), re-sealed with a valid MESSAGE-INTEGRITY where the target checks one,
so that the code behind authentication is reached. A crash is any exception other than
the one decode error a target documents (and, for the rendezvous core, which contains
every exception itself, any datagram it counted as failed).

python bench/fuzz.py                      # 1,000,000 inputs per target
python bench/fuzz.py --count 20000 --seed 7 --target stun --target transport
"""

from __future__ import annotations

import argparse
import hmac
import logging
import random
import struct
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from peer.transport.connection import TransportConnection
from peer.transport.errors import PeerViolation, TransportDecodeError
from peer.transport.frames import AckFrame, MaxData, StreamFrame, encode_packet
from peer.turn_client import TurnClient
from peer.turn_config import TurnClientConfig
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

SERVER = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
REALM, SECRET = "fuzz.example", b"fuzz secret"
_FINGERPRINT_XOR = 0x5354554E


# ---------------------------------------------------------------------- mutations


def _attributes(data: bytes) -> list[tuple[int, bytes]]:
    """A STUN message's attributes as raw (type, value), integrity and fingerprint off."""
    out, at = [], 20
    while at + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, at)
        value = data[at + 4 : at + 4 + length]
        at += 4 + length + (-length & 3)
        if kind in (AttrType.MESSAGE_INTEGRITY, AttrType.FINGERPRINT):
            break
        out.append((kind, value))
    return out


def _seal(header: bytes, attributes: list[tuple[int, bytes]], key: bytes | None) -> bytes:
    """``header`` (type and transaction id) with ``attributes``, a MESSAGE-INTEGRITY made
    with ``key`` (when given) and a FINGERPRINT: a message that passes both checks."""
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) & 3)
        for kind, value in attributes
    )[:65000]
    if key is not None:
        signed = header[:2] + struct.pack("!H", len(body) + 24) + header[4:20] + body
        body += struct.pack("!HH", AttrType.MESSAGE_INTEGRITY, 20)
        body += hmac.new(key, signed, "sha1").digest()
    prefix = header[:2] + struct.pack("!H", len(body) + 8) + header[4:20] + body
    crc = (zlib.crc32(prefix) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    body += struct.pack("!HHI", AttrType.FINGERPRINT, 4, crc)
    return header[:2] + struct.pack("!H", len(body)) + header[4:20] + body


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not buf or choice < 0.1:
            buf += rng.randbytes(rng.randint(1, 64))
        elif choice < 0.4:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice < 0.6:
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif choice < 0.75:
            del buf[rng.randrange(len(buf)) :]
        elif choice < 0.9:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            start = rng.randrange(len(buf))
            buf[start : start + 2] = struct.pack("!H", rng.choice((0, 1, 0xFFFF, len(buf))))
    return bytes(buf)


def mutate_message(data: bytes, rng: random.Random, key: bytes | None) -> bytes:
    """An attribute-level mutation, re-sealed so integrity and fingerprint still check."""
    attributes = _attributes(data)
    choice = rng.random()
    if attributes and choice < 0.3:
        index = rng.randrange(len(attributes))
        kind, value = attributes[index]
        attributes[index] = (kind, mutate_bytes(value, rng) if value else rng.randbytes(4))
    elif attributes and choice < 0.45:
        attributes.append(rng.choice(attributes))
    elif attributes and choice < 0.6:
        del attributes[rng.randrange(len(attributes))]
    elif choice < 0.8:
        kind = rng.choice((*AttrType, *RvAttr, rng.randrange(0x10000)))
        attributes.insert(
            rng.randrange(len(attributes) + 1), (int(kind), rng.randbytes(rng.randint(0, 40)))
        )
    else:
        size = rng.choice((0, 1, 300, 5000, 65000))
        attributes.append((AttrType.PADDING, bytes(size)))
    return _seal(data[:20], attributes, key)


# ---------------------------------------------------------------------- targets


class Target:
    """One parser or handler: ``feed(data)`` raises only what it documents."""

    name = ""
    expected: tuple[type[BaseException], ...] = ()
    key: bytes | None = None

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seeds: list[bytes] = []
        self.keys: dict[bytes, bytes | None] = {}  # a seed's integrity key, if not self.key

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def failures(self) -> int:
        return 0

    def input(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.1 or not self.seeds:
            return rng.randbytes(rng.choice((rng.randint(0, 40), rng.randint(20, 1500))))
        seed = rng.choice(self.seeds)
        if choice < 0.55:
            return mutate_bytes(seed, rng)
        return mutate_message(seed, rng, self.keys.get(seed, self.key))


def _stun_seeds() -> list[bytes]:
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
        self.seeds = _stun_seeds()

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
        self.seeds = [*_stun_seeds(), allocate_now, send, *self._session_seeds()]

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
            _seal(header, _attributes(relayed), self.key),
            _seal(
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
        self.seeds = [
            encode_packet(1, [StreamFrame(0, 0, b"\x00\x00\x00\x05hello")]),
            encode_packet(2, [AckFrame(((0, 3),), 0.001), MaxData(1 << 20)]),
            encode_packet(3, [StreamFrame(2, 0, b"data", fin=True)]),
        ]
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


TARGETS: dict[str, Callable[[random.Random], Target]] = {
    t.name: t for t in (StunParse, RvParse, Framing, Core, TurnClientTarget, Transport)
}


def fuzz(target: Target, count: int) -> tuple[int, list[str]]:
    """Feed ``count`` inputs; (crashes, the first few tracebacks)."""
    crashes, shown = 0, []
    for _ in range(count):
        data = target.input()
        try:
            target.feed(data)
        except target.expected:
            pass
        except Exception:
            crashes += 1
            if len(shown) < 3:
                shown.append(f"input {data[:64].hex()}...\n{traceback.format_exc()}")
    return crashes + target.failures(), shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    # Handlers log what they refuse; a million refusals are not the measurement.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    total = 0
    print(f"fuzz: {args.count:,} inputs per target, seed {args.seed}")
    for name in args.target or list(TARGETS):
        target = TARGETS[name](random.Random(args.seed))
        started = time.process_time()
        crashes, shown = fuzz(target, args.count)
        elapsed = max(time.process_time() - started, 1e-9)
        print(f"  {name:18} {args.count / elapsed:10,.0f} inputs/s  crashes: {crashes}")
        for text in shown:
            print(text, file=sys.stderr)
        total += crashes
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
