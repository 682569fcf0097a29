"""Sans-I/O rendezvous: login, registration refresh, introductions with a punch schedule.

Rendezvous methods arrive on the STUN socket; everything else goes to the STUN Binding
service. Server-initiated introductions (PEER requests) are transactions with RFC 8489
retransmission, driven by ``handle_timer``/``get_timer`` like every sans-I/O piece here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rendezvous.registry import NameRegistry
from rendezvous.stun_service import Reply, StunService, StunServiceConfig
from rendezvous.turn import rest_credentials
from rvproto.keys import ed25519_to_x25519_public
from rvproto.messages import (
    ErrorCodes,
    Introduction,
    Role,
    RvAttr,
    RvMethod,
    all_values,
    is_rv_datagram,
    parse_rv,
    rv_message,
    signature_input,
)
from stunproto import AttrType, ErrorCode, MessageClass, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.client import RetransmitPolicy, StunClient
from stunproto.message import new_transaction_id

log = structlog.get_logger()

MAX_NAME_BYTES = 64
MAX_TEXT_BYTES = 32  # NAT-TYPE, OUTCOME: short words; anything longer would amplify
MAX_PRIVATE_ENDPOINTS = 8
MAX_RTT = 5.0  # seconds: a claimed round trip beyond this only delays the other side
SWEEP_INTERVAL = 5.0
ANSWER_CACHE_TIME = 40.0  # RFC 8489's Ti: how long a client may retransmit
_NOT_IDEMPOTENT = frozenset({RvMethod.LOGIN, RvMethod.CONNECT})


@dataclass(frozen=True, slots=True, kw_only=True)
class RendezvousConfig:
    stun: StunServiceConfig
    registration_lifetime: float = 60.0  # seconds without a refresh before a peer is offline
    challenge_lifetime: float = 30.0
    max_peers: int = 100_000
    # Seconds added to both sides' punch delays. None needed: a side that starts early only
    # loses its first packets, and the other side's first probe triggers an immediate answer.
    punch_margin: float = 0.0
    # TURN REST API credentials for logged-in peers (coturn's use-auth-secret scheme), for
    # the relay at ``turn_server`` (default: this server's primary address, the embedded
    # relay). None: no relay offered.
    turn_secret: bytes | None = None
    turn_server: Address | None = None
    turn_credential_ttl: float = 24 * 3600.0
    introduction_policy: RetransmitPolicy = field(
        default_factory=lambda: RetransmitPolicy(rto=0.2, max_sends=6, rto_max=1.0)
    )


@dataclass(slots=True)
class Registration:
    name: str
    public_key: bytes
    endpoint: Address  # observed: where its requests come from
    private_endpoints: tuple[Address, ...]
    nat_type: str
    session_key: bytes
    rtt: float
    expires: float
    relayed: Address | None = None  # its relay allocation, once it has told us


class RendezvousService:
    def __init__(
        self,
        config: RendezvousConfig,
        registry: NameRegistry,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_offset: float = 0.0,
    ) -> None:
        self.config = config
        self.stun = StunService(config.stun)
        self.registry = registry
        self._random = random_bytes
        # Unix time = now + wall_offset: TURN REST usernames carry a wall-clock expiry, and
        # this core reads no clock (the adapter passes the offset of its monotonic clock).
        self._wall_offset = wall_offset
        self._secret = random_bytes(32)
        self._peers: dict[str, Registration] = {}
        self._used_challenges: dict[bytes, float] = {}  # challenge -> when it expires
        # (source, transaction id) -> (until when, answer): for retransmitted requests
        self._answered: dict[tuple[Address, bytes], tuple[float, bytes]] = {}
        self._introducer = StunClient(policy=config.introduction_policy)
        self._primary = config.stun.primary
        self._next_sweep: float | None = None  # when to forget expired peers and challenges
        self._handlers: dict[int, Callable[[StunMessage, Address, float], bytes | None]] = {
            RvMethod.LOGIN: self._login,
            RvMethod.REFRESH: self._refresh,
            RvMethod.CONNECT: self._connect,
            RvMethod.REPORT: self._report,
        }

    @property
    def local_addresses(self) -> tuple[Address, ...]:
        return self.stun.local_addresses

    def online(self, name: str, now: float) -> Registration | None:
        peer = self._peers.get(name)
        return peer if peer is not None and peer.expires > now else None

    # ------------------------------------------------------------------ dispatch

    def handle(self, data: bytes, source: Address, local: Address, now: float) -> Reply | None:
        if not is_rv_datagram(data):
            return self.stun.handle(data, source, local, now)
        if not self.stun.limiter.allow(source[0], now):
            return None
        try:
            message = parse_rv(data)
        except StunDecodeError:
            return None
        if message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
            self._introducer.receive_datagram(data, source, now)  # a peer acked an intro
            return None
        if message.legacy:
            return None
        if message.message_class is MessageClass.INDICATION and message.method != RvMethod.REPORT:
            return None  # LOGIN, REFRESH and CONNECT are requests only
        handler = self._handlers.get(message.method)
        if handler is None:
            return None
        # A retransmitted request (its answer was lost) gets the very same answer: a login
        # must not fail because its challenge is now "used", and a CONNECT must not start
        # a second introduction with another token (RFC 8489 6.3.4 caches likewise).
        key = (source, message.transaction_id)
        cached = self._answered.get(key)
        if cached is not None and cached[0] > now:
            return Reply(cached[1], local, source)
        response = handler(message, source, now)
        if response is not None and message.method in _NOT_IDEMPOTENT:
            if len(self._answered) >= self.config.max_peers:
                self._expire(now)
            self._answered[key] = (now + ANSWER_CACHE_TIME, response)
        if self._next_sweep is None and (self._peers or self._used_challenges or self._answered):
            self._next_sweep = now + SWEEP_INTERVAL
        return None if response is None else Reply(response, local, source)

    # The asyncio adapter sends introductions from the primary socket.
    def datagrams_to_send(self, now: float) -> list[Reply]:
        return [
            Reply(data, self._primary, destination)
            for data, destination in self._introducer.datagrams_to_send(now)
        ]

    def get_timer(self) -> float | None:
        timers = [t for t in (self._introducer.get_timer(), self._next_sweep) if t is not None]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        self._introducer.handle_timer(now)
        while self._introducer.next_event() is not None:
            pass  # a lost introduction is covered by the initiator's punching deadline
        if self._next_sweep is not None and now >= self._next_sweep:
            self._expire(now)
            busy = self._peers or self._used_challenges or self._answered
            self._next_sweep = now + SWEEP_INTERVAL if busy else None

    # ------------------------------------------------------------------ login

    def _challenge(self, source: Address, name: str, key: bytes, issued_ms: int) -> bytes:
        stamp = issued_ms.to_bytes(8, "big")
        material = stamp + f"{source[0]}|{source[1]}|{name}|".encode() + key
        return stamp + hmac.new(self._secret, material, hashlib.sha256).digest()[:16]

    def _login(self, message: StunMessage, source: Address, now: float) -> bytes | None:
        name = message.get(RvAttr.PEER_NAME)
        key = message.get(RvAttr.PUBLIC_KEY)
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
            return self._error(message, ErrorCodes.BAD_REQUEST, "a peer name is required")
        if not isinstance(key, bytes):
            return self._error(message, ErrorCodes.BAD_REQUEST, "a public key is required")
        challenge = message.get(RvAttr.CHALLENGE)
        if challenge is None:
            fresh = self._challenge(source, name, key, int(now * 1000))
            return self._error(
                message, ErrorCodes.UNAUTHORIZED, "sign this challenge", (RvAttr.CHALLENGE, fresh)
            )
        issued = int.from_bytes(challenge[:8], "big") / 1000
        expected = self._challenge(source, name, key, int.from_bytes(challenge[:8], "big"))
        if not hmac.compare_digest(challenge, expected):
            return self._error(message, ErrorCodes.UNAUTHORIZED, "challenge not issued to you")
        if not issued <= now < issued + self.config.challenge_lifetime:
            return self._error(message, ErrorCodes.STALE, "challenge expired")
        if challenge in self._used_challenges:
            log.warning("login_replay", name=name, source=_text(source))
            return self._error(message, ErrorCodes.STALE, "challenge already used")
        if not _only_fingerprint_after_signature(message):
            # Unsigned additions (an on-path attacker appending endpoints or an RTT).
            return self._error(message, ErrorCodes.BAD_REQUEST, "attributes after SIGNATURE")
        nat_type = message.get(RvAttr.NAT_TYPE, "unknown")
        if not isinstance(nat_type, str) or len(nat_type.encode()) > MAX_TEXT_BYTES:
            return self._error(message, ErrorCodes.BAD_REQUEST, "NAT-TYPE too long")
        try:
            # Small-order and non-canonical keys verify forged signatures in some libraries
            # and have no X25519 form for the peers' handshake: refuse them outright.
            ed25519_to_x25519_public(key)
            Ed25519PublicKey.from_public_bytes(key).verify(
                message.get(RvAttr.SIGNATURE) or b"", signature_input(message.raw)
            )
        except (InvalidSignature, ValueError, StunDecodeError):
            return self._error(message, ErrorCodes.UNAUTHORIZED, "bad signature")
        self._used_challenges[challenge] = issued + self.config.challenge_lifetime
        if not self.registry.claim(name, key):
            log.warning("login_refused", name=name, source=_text(source), reason="name taken")
            return self._error(message, ErrorCodes.FORBIDDEN, "name belongs to another key")
        if name not in self._peers and len(self._peers) >= self.config.max_peers:
            self._expire(now)
            if len(self._peers) >= self.config.max_peers:
                return self._error(message, ErrorCodes.TRY_LATER, "server full")
        private = tuple(all_values(message, RvAttr.PRIVATE_ENDPOINT))[:MAX_PRIVATE_ENDPOINTS]
        session_key = self._random(16)
        rtt = min(message.get(RvAttr.RTT, 0) / 1_000_000, MAX_RTT)
        self._peers[name] = Registration(
            name=name,
            public_key=key,
            endpoint=source,
            private_endpoints=private,  # type: ignore[arg-type]
            nat_type=nat_type,
            session_key=session_key,
            rtt=rtt,
            expires=now + self.config.registration_lifetime,
        )
        log.info(
            "login",
            name=name,
            endpoint=_text(source),
            private=[_text(endpoint) for endpoint in private],  # type: ignore[arg-type]
            nat_type=message.get(RvAttr.NAT_TYPE, "unknown"),
        )
        reply = message.reply(
            MessageClass.SUCCESS,
            (AttrType.XOR_MAPPED_ADDRESS, source),
            (AttrType.LIFETIME, int(self.config.registration_lifetime)),
            (RvAttr.SESSION_KEY, session_key),
            *self._turn_credentials(name, now),
        )
        return reply.encode(fingerprint=True)

    def _turn_credentials(self, name: str, now: float) -> tuple[tuple[int, object], ...]:
        secret = self.config.turn_secret
        if secret is None:
            return ()
        expires = int(now + self._wall_offset + self.config.turn_credential_ttl)
        username, password = rest_credentials(secret, name, expires)
        return (
            (RvAttr.TURN_SERVER, self.config.turn_server or self._primary),
            (RvAttr.TURN_USERNAME, username),
            (RvAttr.TURN_PASSWORD, password),
        )

    # ------------------------------------------------------------------ authenticated

    def _authenticate(self, message: StunMessage, now: float) -> Registration | None:
        name = message.get(AttrType.USERNAME)
        peer = self.online(name, now) if isinstance(name, str) else None
        if peer is None or not message.check_integrity(peer.session_key):
            return None
        return peer

    def _refresh(self, message: StunMessage, source: Address, now: float) -> bytes | None:
        peer = self._authenticate(message, now)
        if peer is None:
            return self._error(message, ErrorCodes.UNAUTHORIZED, "log in again")
        # The endpoint moves only with a LOGIN (its challenge proves the new address): a
        # REFRESH can be replayed or spoofed from anywhere. The answer shows the peer the
        # address we see, so a peer whose mapping changed logs in again.
        peer.expires = now + self.config.registration_lifetime
        if RvAttr.RTT in message:
            peer.rtt = min(message.get(RvAttr.RTT) / 1_000_000, MAX_RTT)
        if RvAttr.RELAYED_ENDPOINT in message:
            peer.relayed = message.get(RvAttr.RELAYED_ENDPOINT)
        reply = message.reply(
            MessageClass.SUCCESS,
            (AttrType.XOR_MAPPED_ADDRESS, source),
            (AttrType.LIFETIME, int(self.config.registration_lifetime)),
        )
        return reply.encode(integrity_key=peer.session_key, fingerprint=True)

    def _connect(self, message: StunMessage, source: Address, now: float) -> bytes | None:
        caller = self._authenticate(message, now)
        if caller is None:
            return self._error(message, ErrorCodes.UNAUTHORIZED, "log in again")
        target_name = message.get(RvAttr.PEER_NAME)
        if not isinstance(target_name, str) or len(target_name.encode()) > MAX_NAME_BYTES:
            return self._error(message, ErrorCodes.BAD_REQUEST, "bad peer name")
        target = self.online(target_name, now)
        if target is None or target is caller:
            log.info("exchange_refused", source=caller.name, target=target_name)
            return self._error(
                message,
                ErrorCodes.NOT_FOUND,
                "that peer is unknown or offline",
                key=caller.session_key,
            )
        token = self._random(16)
        # Each side learns of the other half a round trip after we send; delay the earlier
        # one so that both start punching together (as libp2p's DCUtR does with SYNC).
        arrival = max(caller.rtt, target.rtt) / 2
        caller_delay = arrival - caller.rtt / 2 + self.config.punch_margin
        target_delay = arrival - target.rtt / 2 + self.config.punch_margin
        to_target = rv_message(
            RvMethod.PEER,
            MessageClass.REQUEST,
            new_transaction_id(),
            (
                (AttrType.USERNAME, target.name),
                *_introduce(caller, Role.RESPONDER, token, target_delay).attributes(),
            ),
        )
        self._introducer.send_request(
            to_target, target.endpoint, now, integrity_key=target.session_key, fingerprint=True
        )
        log.info("exchange", source=caller.name, target=target.name)
        reply = message.reply(
            MessageClass.SUCCESS,
            *_introduce(target, Role.INITIATOR, token, caller_delay).attributes(),
        )
        return reply.encode(integrity_key=caller.session_key, fingerprint=True)

    def _report(self, message: StunMessage, source: Address, now: float) -> bytes | None:
        peer = self._authenticate(message, now)
        outcome = message.get(RvAttr.OUTCOME)
        if peer is not None and isinstance(outcome, str) and len(outcome) <= MAX_TEXT_BYTES:
            log.info(
                "punch_outcome",
                name=peer.name,
                peer=message.get(RvAttr.PEER_NAME),
                outcome=message.get(RvAttr.OUTCOME),
                ms=message.get(RvAttr.ELAPSED),
            )
        return None

    # ------------------------------------------------------------------ helpers

    def _error(
        self,
        message: StunMessage,
        code: int,
        reason: str,
        *extra: tuple[int, object],
        key: bytes | None = None,
    ) -> bytes:
        reply = message.reply(
            MessageClass.ERROR, (AttrType.ERROR_CODE, ErrorCode(code, reason)), *extra
        )
        return reply.encode(integrity_key=key, fingerprint=True)

    def _expire(self, now: float) -> None:
        for name in [name for name, peer in self._peers.items() if peer.expires <= now]:
            del self._peers[name]
        for challenge in [c for c, until in self._used_challenges.items() if until <= now]:
            del self._used_challenges[challenge]
        for key in [k for k, (until, _) in self._answered.items() if until <= now]:
            del self._answered[key]
        if len(self._answered) >= self.config.max_peers:
            self._answered.clear()  # a flood of fresh requests: bounded memory wins


def _introduce(peer: Registration, role: Role, token: bytes, delay: float) -> Introduction:
    return Introduction(
        name=peer.name,
        public_key=peer.public_key,
        public_endpoint=peer.endpoint,
        private_endpoints=peer.private_endpoints,
        role=role,
        token=token,
        punch_delay=max(delay, 0.0),
        nat_type=peer.nat_type,
        relayed_endpoint=peer.relayed,
    )


def _text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _only_fingerprint_after_signature(message: StunMessage) -> bool:
    kinds = [kind for kind, _ in message.attributes]
    if RvAttr.SIGNATURE not in kinds:
        return True  # the signature check itself refuses it
    after = kinds[kinds.index(RvAttr.SIGNATURE) + 1 :]
    return all(kind == AttrType.FINGERPRINT for kind in after)
