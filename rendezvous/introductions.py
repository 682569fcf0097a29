"""Sans-I/O rendezvous protocol: login, registration refresh, introductions with a punch
schedule (docs/protocol.md).

``rendezvous.core`` hands this service the rendezvous-method datagrams (rvproto) that passed
the rate limit; answers go back by the route the request came by. Server-initiated
introductions (PEER requests) are transactions with RFC 8489 retransmission, driven by
``handle_timer``/``get_timer`` like every sans-I/O piece here, and go to a peer by the route
it logged in by (its TCP connection, for a peer without UDP).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from rendezvous.answers import AnswerCache, error_answer
from rendezvous.config import RendezvousConfig as RendezvousConfig
from rendezvous.introduced import IntroducedPeers
from rendezvous.login import LoginChecker, LoginRefusal, ResumedLogin
from rendezvous.quotas import Quotas
from rendezvous.registration import Registration, introduce
from rendezvous.registry import NameRegistry, RegistryError
from rendezvous.routes import ClientVia, Transmit, address_text
from rendezvous.tickets import Tickets
from rendezvous.turn_auth import rest_credentials
from rvproto.login import LoginSecrets
from rvproto.login import session_key as login_session_key
from rvproto.messages import (
    ErrorCodes,
    Role,
    RvAttr,
    RvMethod,
    all_values,
    parse_rv,
    rv_message,
)
from rvproto.names import is_canonical
from rvproto.resumption import seal
from stunproto import AttrType, MessageClass, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.client import StunClient
from stunproto.message import new_transaction_id

log = structlog.get_logger()

MAX_TEXT_BYTES = 32  # OUTCOME: a short word; anything longer would amplify
MAX_PRIVATE_ENDPOINTS = 8
MAX_RTT = 5.0  # seconds: a claimed round trip beyond this only delays the other side
SWEEP_INTERVAL = 5.0
_NOT_IDEMPOTENT = frozenset({RvMethod.LOGIN, RvMethod.CONNECT})


Handler = Callable[[StunMessage, Address, ClientVia, float], "bytes | None"]


class IntroductionService:
    def __init__(
        self,
        config: RendezvousConfig,
        registry: NameRegistry,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_offset: float = 0.0,
        introduced: IntroducedPeers | None = None,  # the embedded relay's peer policy
    ) -> None:
        self.config = config
        self.registry = registry
        self._introduced = introduced
        self._random = random_bytes
        # Unix time = now + wall_offset: TURN REST usernames carry a wall-clock expiry, and
        # this core reads no clock (the adapter passes the offset of its monotonic clock).
        self._wall_offset = wall_offset
        static_bytes = config.server_key or random_bytes(32)
        static = X25519PrivateKey.from_private_bytes(static_bytes)
        self._tickets = Tickets(
            static_bytes,
            epoch=config.ticket_epoch,
            lifetime=config.ticket_lifetime,
            wall_offset=wall_offset,
            random_bytes=random_bytes,
        )
        self._logins = LoginChecker(
            random_bytes(32), config.challenge_lifetime, static, self._tickets
        )
        self.server_key = self._logins.server_key  # (public: what peers pin)
        self._quotas = Quotas(config.quotas)
        self._peers: dict[str, Registration] = {}
        self._by_route: dict[tuple[Address, ClientVia], str] = {}  # (endpoint, via) -> name
        self._answered: AnswerCache[tuple[Address, bytes]] = AnswerCache(
            max_entries=config.max_peers
        )
        self._introducer = StunClient(policy=config.introduction_policy)
        self._routes: dict[bytes, ClientVia] = {}  # introduction transaction id -> route
        self._primary = config.stun.primary
        self._next_sweep: float | None = None  # when to forget expired peers and challenges
        self._handlers: dict[int, Handler] = {
            RvMethod.LOGIN: self._login,
            RvMethod.REFRESH: self._refresh,
            RvMethod.CONNECT: self._connect,
            RvMethod.REPORT: self._report,
        }

    def online(self, name: str, now: float) -> Registration | None:
        peer = self._peers.get(name)
        return peer if peer is not None and peer.expires > now else None

    def serves(self, source: Address, via: ClientVia, now: float) -> bool:
        """Whether a peer is logged in from ``source`` by ``via`` (a TCP connection that
        has logged in keeps its slot: rendezvous.adapters.tcp)."""
        name = self._by_route.get((source, via))
        peer = None if name is None else self._peers.get(name)
        return (
            peer is not None and peer.endpoint == source and peer.via == via and peer.expires > now
        )

    # ------------------------------------------------------------------ dispatch

    def answer(self, data: bytes, source: Address, via: ClientVia, now: float) -> bytes | None:
        """The answer to a rendezvous-method datagram (the rate limit already passed), to
        go back to ``source`` by ``via``; None for what gets no answer."""
        try:
            message = parse_rv(data)
        except StunDecodeError:
            return None
        if message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
            self._introducer.receive_datagram(data, source, now)  # a peer acked an intro
            self._forget_finished()
            return None
        if message.legacy:
            return None  # (so every answer below carries FINGERPRINT: error_answer's default)
        if message.message_class is MessageClass.INDICATION and message.method != RvMethod.REPORT:
            return None  # LOGIN, REFRESH and CONNECT are requests only
        handler = self._handlers.get(message.method)
        if handler is None:
            return None
        key = (source, message.transaction_id)
        cached = self._answered.get(key, now)
        if cached is not None:
            return cached
        response = handler(message, source, via, now)
        if response is not None and message.method in _NOT_IDEMPOTENT:
            self._answered.put(key, response, now)
        if self._next_sweep is None and (self._peers or self._logins or self._answered):
            self._next_sweep = now + SWEEP_INTERVAL
        return response

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        # A send queued for a transaction that has ended since (acked, or given up) has
        # lost its route, and is not needed any more.
        routes = self._routes
        return [
            Transmit(data, destination, via)
            for data, destination in self._introducer.datagrams_to_send(now)
            if (via := routes.get(data[8:20])) is not None
        ]

    def get_timer(self) -> float | None:
        at, sweep = self._introducer.get_timer(), self._next_sweep
        return sweep if at is None or (sweep is not None and sweep < at) else at

    def handle_timer(self, now: float) -> None:
        self._introducer.handle_timer(now)
        # A lost introduction is covered by the initiator's punching deadline.
        self._forget_finished()
        if self._next_sweep is not None and now >= self._next_sweep:
            self._expire(now)
            busy = self._peers or self._logins or self._answered
            self._next_sweep = now + SWEEP_INTERVAL if busy else None

    def _forget_finished(self) -> None:
        while (event := self._introducer.next_event()) is not None:
            self._routes.pop(event.transaction_id, None)

    # ------------------------------------------------------------------ login

    def _login(
        self, message: StunMessage, source: Address, via: ClientVia, now: float
    ) -> bytes | None:
        login = self._logins.check(message, source, now)
        if isinstance(login, LoginRefusal):
            return error_answer(message, login.code, login.reason, *login.extra)
        name, key = login.name, login.public_key
        if not self.registry.known(name) and not self._quotas.new_name(source[0], now):
            self._logins.unspend(login.challenge)
            log.warning("login_refused", name=name, source=address_text(source), reason="quota")
            reason = "too many new names from your address; try again later"
            return error_answer(message, ErrorCodes.TRY_LATER, reason)
        try:
            owned = self.registry.claim(name, key)
        except RegistryError as exc:
            self._logins.unspend(login.challenge)
            log.error("login_failed", name=name, error=str(exc))
            return error_answer(
                message, ErrorCodes.SERVER_ERROR, "the server cannot record logins now"
            )
        if not owned:
            log.warning(
                "login_refused", name=name, source=address_text(source), reason="name taken"
            )
            return error_answer(message, ErrorCodes.FORBIDDEN, "name belongs to another key")
        previous = self._peers.get(name)
        moved = previous is None or previous.endpoint[0] != source[0]
        if moved and not self._quotas.may_register(source[0]):
            self._expire(now)  # (perhaps some of them are gone)
            if not self._quotas.may_register(source[0]):
                reason = "too many peers online from your address"
                return error_answer(message, ErrorCodes.TRY_LATER, reason)
        if name not in self._peers and len(self._peers) >= self.config.max_peers:
            self._expire(now)
            if len(self._peers) >= self.config.max_peers:
                return error_answer(message, ErrorCodes.TRY_LATER, "server full")
        private = tuple(all_values(message, RvAttr.PRIVATE_ENDPOINT))[:MAX_PRIVATE_ENDPOINTS]
        # Message 2 proves this server's key (a resumed answer, the ticket's secret); the
        # TURN credentials and the next ticket travel inside it, and the session key is
        # derived, never sent.
        resumed = isinstance(login, ResumedLogin)
        expires = login.expires if isinstance(login, ResumedLogin) else None
        secrets, relay = self._login_secrets(name, key, now, expires)
        if isinstance(login, ResumedLogin):
            session_key = login.keys.session_key
            proof = (RvAttr.SEALED, seal(login.keys.payload_key, secrets.encode()))
        else:
            message2, keys = login.responder.write_message2(secrets.encode())
            session_key = login_session_key(keys.receive)
            proof = (RvAttr.HANDSHAKE, message2)
        rtt = min(message.get(RvAttr.RTT, 0) / 1_000_000, MAX_RTT)
        self._by_route[(source, via)] = name
        if previous is not None:
            self._quotas.unregistered(previous.endpoint[0])
        self._quotas.registered(source[0])
        self._peers[name] = Registration(
            name=name,
            public_key=key,
            endpoint=source,
            via=via,
            private_endpoints=private,  # type: ignore[arg-type]
            nat_type=login.nat_type,
            session_key=session_key,
            rtt=rtt,
            expires=now + self.config.registration_lifetime,
        )
        log.info(
            "login",
            name=name,
            endpoint=address_text(source),
            private=[address_text(endpoint) for endpoint in private],  # type: ignore[arg-type]
            nat_type=login.nat_type,
            resumed=resumed,
        )
        reply = message.reply(
            MessageClass.SUCCESS,
            (AttrType.XOR_MAPPED_ADDRESS, source),
            (AttrType.LIFETIME, int(self.config.registration_lifetime)),
            *relay,
            proof,
        )
        return reply.encode(integrity_key=session_key, fingerprint=True)

    def _login_secrets(
        self, name: str, key: bytes, now: float, expires: int | None
    ) -> tuple[LoginSecrets, tuple[tuple[int, object], ...]]:
        """What the answer carries encrypted (TURN credentials, the next ticket) and in
        clear (TURN-SERVER)."""
        ticket, secret = self._tickets.issue(name, key, now, expires)
        relay: tuple[tuple[int, object], ...] = ()
        username = password = ""
        if self.config.turn_secret is not None:
            until = int(now + self._wall_offset + self.config.turn_credential_ttl)
            username, password = rest_credentials(self.config.turn_secret, name, until)
            relay = ((RvAttr.TURN_SERVER, self.config.turn_server or self._primary),)
        return LoginSecrets(username, password, ticket, secret), relay

    # ------------------------------------------------------------------ authenticated

    def _authenticate(self, message: StunMessage, now: float) -> Registration | None:
        name = message.get(AttrType.USERNAME)
        peer = self.online(name, now) if isinstance(name, str) else None
        if peer is None or not message.check_integrity(peer.session_key):
            return None
        return peer

    def _refresh(
        self, message: StunMessage, source: Address, via: ClientVia, now: float
    ) -> bytes | None:
        peer = self._authenticate(message, now)
        if peer is None:
            return error_answer(message, ErrorCodes.UNAUTHORIZED, "log in again")
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

    def _connect(
        self, message: StunMessage, source: Address, via: ClientVia, now: float
    ) -> bytes | None:
        caller = self._authenticate(message, now)
        if caller is None:
            return error_answer(message, ErrorCodes.UNAUTHORIZED, "log in again")
        target_name = message.get(RvAttr.PEER_NAME)
        if not is_canonical(target_name):  # (the client folds it: rvproto.names)
            return error_answer(message, ErrorCodes.BAD_REQUEST, "bad peer name")
        target = self.online(target_name, now)
        if target is None or target is caller:
            log.info("exchange_refused", source=caller.name, target=target_name)
            return error_answer(
                message,
                ErrorCodes.NOT_FOUND,
                "that peer is unknown or offline",
                key=caller.session_key,
            )
        if not self._quotas.introduction(target_name, now):
            log.warning("exchange_refused", source=caller.name, target=target_name, reason="quota")
            reason = "too many introductions to that peer; try again later"
            return error_answer(message, ErrorCodes.TRY_LATER, reason, key=caller.session_key)
        if self._introduced is not None:  # each may relay to the other's public IP a while
            self._introduced.introduce(
                caller.name, target.name, (target.endpoint[0],), (caller.endpoint[0],), now
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
                *introduce(caller, Role.RESPONDER, token, target_delay).attributes(),
            ),
        )
        self._routes[to_target.transaction_id] = target.via
        self._introducer.send_request(
            to_target, target.endpoint, now, integrity_key=target.session_key, fingerprint=True
        )
        log.info("exchange", source=caller.name, target=target.name)
        reply = message.reply(
            MessageClass.SUCCESS,
            *introduce(target, Role.INITIATOR, token, caller_delay).attributes(),
        )
        return reply.encode(integrity_key=caller.session_key, fingerprint=True)

    def _report(
        self, message: StunMessage, source: Address, via: ClientVia, now: float
    ) -> bytes | None:
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

    def _expire(self, now: float) -> None:
        for name in [name for name, peer in self._peers.items() if peer.expires <= now]:
            peer = self._peers.pop(name)
            self._quotas.unregistered(peer.endpoint[0])
            if self._by_route.get((peer.endpoint, peer.via)) == name:
                del self._by_route[(peer.endpoint, peer.via)]
        self._logins.expire(now)
        self._answered.expire(now)
