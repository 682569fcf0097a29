"""Sans-I/O client side of the rendezvous protocol: login (a challenge, then a Noise
handshake to the server's key, or the ticket the last one brought: peer.rendezvous_login),
refresh, CONNECT, introductions.

A lost registration (a refresh unanswered or refused, a CONNECT told to log in again, the
TCP connection gone) schedules another login with backoff (peer.relogin: when, what to say).
"""

from __future__ import annotations

import random
from collections import deque
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peer.errors import LocalProtocolError
from peer.events import (
    ConnectFailed,
    Introduced,
    LoggedIn,
    LoginFailed,
    RvEvent,
)
from peer.relogin import Backoff, Reachability
from peer.rendezvous_config import RendezvousClientConfig as RendezvousClientConfig
from peer.rendezvous_login import (
    LoginAnswer,
    LoginHandshake,
    LoginResumption,
    SessionTicket,
    key_mismatch,
)
from peer.rendezvous_requests import (
    ConnectRequest,
    HandshakeLoginRequest,
    LoginRequest,
    RefreshRequest,
    RvRequest,
    no_answer,
    report_indication,
)
from rvproto.messages import (
    RV_CODECS,
    ErrorCodes,
    Introduction,
    RvAttr,
    RvMethod,
    parse_rv,
    rv_message,
)
from stunproto import AttrType, ErrorCode, MessageClass, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.client import ResponseReceived, StunClient, TransactionTimedOut
from stunproto.message import is_stun, new_transaction_id


class LoginState(Enum):
    IDLE = "idle"
    CHALLENGED = "challenged"  # asked for a challenge, waiting
    HANDSHAKING = "handshaking"  # sent the handshake login, waiting
    LOGGED_IN = "logged-in"
    FAILED = "failed"  # the first login failed: start-up decides what next (peer.startup)
    OFFLINE = "offline"  # was logged in, lost it: a login is scheduled (peer.relogin)


class RendezvousClient:
    def __init__(
        self,
        config: RendezvousClientConfig,
        static: X25519PrivateKey,
        *,
        rng: random.Random | None = None,  # the backoff's jitter
    ) -> None:
        self.config = config
        self._static = static  # our Noise static key (the X25519 form of our identity)
        self.server_key = config.server_key  # learned at the first login when not given
        self._handshake: LoginHandshake | LoginResumption | None = None
        # From the last login, for the next (a NAT rebinding, a restarted server: no
        # Diffie-Hellman); in memory only, shown only to the server key that issued it.
        self.ticket: SessionTicket | None = None
        self.resumed = False  # whether the last login was resumed with a ticket
        self._stun = StunClient(policy=config.policy, codecs=RV_CODECS)
        self._purpose: dict[bytes, RvRequest] = {}  # by transaction id
        self._events: deque[RvEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self.state = LoginState.IDLE
        self.session_key: bytes | None = None
        self.public_endpoint: Address | None = None
        self.rtt: float | None = None
        self._refresh_at: float | None = None
        self._refresh_interval = 20.0
        self._seen_introductions: set[bytes] = set()
        self.relayed: Address | None = None  # our relay allocation, told to the server
        self._restarts = 0  # logins restarted after a stale challenge
        self.reachability = Reachability(Backoff(config.relogin, rng or random.Random()))

    # ------------------------------------------------------------------ commands

    def login(self, now: float) -> None:
        self._cancel(LoginRequest, HandshakeLoginRequest)  # one login at a time
        self.state = LoginState.CHALLENGED
        # Padded as long as the challenge answer (rendezvous.login), which brings the
        # server's key: so that the server is no amplifier.
        attributes = (*self._identity_attributes(), (AttrType.PADDING, bytes(48)))
        self._start(self._request(RvMethod.LOGIN, *attributes), now, LoginRequest())

    def connect(self, name: str, now: float) -> None:
        """An introduction to ``name``, canonical (rvproto.names; the server refuses others)."""
        if self.state is not LoginState.LOGGED_IN:
            if not self.reachability.ever_online:
                raise LocalProtocolError("log in before connecting")
            # Lost meanwhile: the caller hears it like any other failure, not as a mistake.
            reason = "offline: not logged in at the rendezvous server (logging in again)"
            self._events.append(ConnectFailed(name, reason, None))
            return
        request = self._request(
            RvMethod.CONNECT, (AttrType.USERNAME, self.config.name), (RvAttr.PEER_NAME, name)
        )
        self._start(request, now, ConnectRequest(name), integrity=True)

    def set_relayed(self, relayed: Address, now: float) -> None:
        """Tell the server our relay allocation (it passes it on in introductions)."""
        self.relayed = relayed
        if self.state is LoginState.LOGGED_IN:
            self._refresh_at = None
            self._send_refresh(now)

    def report(self, peer: str, outcome: str, elapsed: float) -> None:
        """Tell the server how a punch ended (an indication: no answer, no retransmission)."""
        if self.session_key is None:
            return
        indication = report_indication(self.config.name, peer, outcome, elapsed)
        data = indication.encode(integrity_key=self.session_key, fingerprint=True)
        self._outbox.append((data, self.config.server))

    def connection_lost(self, reason: str, now: float) -> None:
        """The TCP connection to the server closed (or could not be opened again): the
        registration (or this login attempt) is lost. Before the first login, start-up
        decides instead (peer.startup)."""
        if self.reachability.ever_online and self.state is not LoginState.OFFLINE:
            self._lose(reason, now)  # (offline already: nothing more to lose)

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, source: Address, now: float) -> bool:
        if source != self.config.server or not is_stun(data):
            return False
        if self._stun.receive_datagram(data, source, now):
            self._process_events(now)
            return True
        try:
            message = parse_rv(data)
        except StunDecodeError:
            return False
        if message.method == RvMethod.PEER and message.message_class is MessageClass.REQUEST:
            self._on_introduction(message, now)
            return True
        return False

    def handle_timer(self, now: float) -> None:
        self._stun.handle_timer(now)
        self._process_events(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._send_refresh(now)
        if self.reachability.due(now):
            self.login(now)

    def get_timer(self) -> float | None:
        candidates = (self._stun.get_timer(), self._refresh_at, self.reachability.retry_at)
        timers = [t for t in candidates if t is not None]
        return min(timers, default=None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self._stun.datagrams_to_send(now) + self._outbox
        self._outbox = []
        return out

    def next_event(self) -> RvEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ internals

    def _identity_attributes(self) -> tuple[tuple[int, object], ...]:
        return ((RvAttr.PEER_NAME, self.config.name), (RvAttr.PUBLIC_KEY, self.config.public_key))

    @staticmethod
    def _request(method: int, *attributes: tuple[int, object]) -> StunMessage:
        return rv_message(method, MessageClass.REQUEST, new_transaction_id(), attributes)

    def _start(
        self,
        request: StunMessage,
        now: float,
        purpose: RvRequest,
        *,
        integrity: bool = False,
    ) -> None:
        key = self.session_key if integrity else None
        data = request.encode(integrity_key=key, fingerprint=True)
        self._start_encoded(request.transaction_id, data, now, purpose)

    def _start_encoded(
        self, transaction_id: bytes, data: bytes, now: float, purpose: RvRequest
    ) -> None:
        self._stun.send_encoded(transaction_id, data, self.config.server, now)
        self._purpose[transaction_id] = purpose

    def _process_events(self, now: float) -> None:
        while (event := self._stun.next_event()) is not None:
            purpose = self._purpose.pop(event.transaction_id, None)
            if purpose is None:
                continue
            if isinstance(event, TransactionTimedOut):
                self._on_timeout(purpose, now)
            else:
                self._on_response(purpose, event, now)

    def _on_timeout(self, purpose: RvRequest, now: float) -> None:
        match purpose:
            case LoginRequest() | HandshakeLoginRequest():
                self._login_failed(no_answer(self.config.policy.total_time()), None, now)
            case ConnectRequest(name=name):
                reason = no_answer(self.config.policy.total_time())
                self._events.append(ConnectFailed(name, reason, None))
            case RefreshRequest():
                self._lose("the rendezvous server stopped answering", now)

    def _on_response(self, purpose: RvRequest, event: ResponseReceived, now: float) -> None:
        response = event.response
        if event.sends == 1:
            self.rtt = event.rtt
        error: ErrorCode | None = response.get(AttrType.ERROR_CODE)
        if isinstance(purpose, LoginRequest):
            challenge = response.get(RvAttr.CHALLENGE)
            presented = response.get(RvAttr.SERVER_KEY)
            if error is None or error.code != ErrorCodes.UNAUTHORIZED or challenge is None:
                self._fail_login(error, now)
            elif not isinstance(presented, bytes):
                self._login_failed("the server presented no key", None, now)
            elif self.server_key is not None and presented != self.server_key:
                reason = key_mismatch(self.config.server, presented, self.server_key)
                self._login_failed(reason, None, now)
            else:
                self.state = LoginState.HANDSHAKING
                self._send_handshake_login(challenge, presented, now)
        elif isinstance(purpose, HandshakeLoginRequest):
            attempt = self._handshake
            refused = error is not None and error.code == ErrorCodes.TICKET_REFUSED
            if refused and isinstance(attempt, LoginResumption):
                # Expired, another key epoch, a server with another key: a full handshake
                # at once, with the same challenge (a refused ticket leaves it unspent).
                self.ticket = None
                self._send_handshake_login(attempt.challenge, attempt.server_key, now)
                return
            if error is not None and error.code == ErrorCodes.STALE and self._restarts < 3:
                # The challenge expired or our retransmission lost the cached answer: start
                # over with a fresh challenge rather than giving up.
                self._restarts += 1
                self.login(now)
                return
            if error is not None or attempt is None:
                self._fail_login(error, now)
                return
            answer = attempt.finish(response)
            if isinstance(answer, str):
                self._login_failed(answer, None, now)
                return
            self._logged_in(answer, now)
        elif isinstance(purpose, RefreshRequest):
            if error is not None or not self._authentic(response):
                # Unknown or expired there (a restarted server has forgotten everyone).
                why = "unauthenticated answer" if error is None else error.reason
                self._lose(f"registration lost ({why})", now)
                return
            mapped = response.get(AttrType.XOR_MAPPED_ADDRESS, self.public_endpoint)
            if mapped != self.public_endpoint:
                # Our NAT gave us a new mapping. The server moves a registration only on a
                # login (whose challenge proves the address), so log in again from here.
                self.login(now)
                return
            self._refresh_at = now + self._refresh_interval
        elif isinstance(purpose, ConnectRequest):
            name = purpose.name
            if error is not None:
                # Errors need no integrity (a 401 cannot carry it); forging one only denies
                # service, which an on-path attacker can do anyway.
                self._events.append(ConnectFailed(name, error.reason, error.code))
                if error.code == ErrorCodes.UNAUTHORIZED and self.state is LoginState.LOGGED_IN:
                    self._lose(f"registration lost ({error.reason})", now)
                return
            if not self._authentic(response):
                # An introduction must be vouched for: it carries the key to trust.
                self._events.append(ConnectFailed(name, "unauthenticated answer", None))
                return
            try:
                introduction = Introduction.from_message(response)
            except StunDecodeError as exc:
                self._events.append(ConnectFailed(name, str(exc), None))
                return
            self._events.append(Introduced(introduction, now))

    def _logged_in(self, answer: LoginAnswer, now: float) -> None:
        self._restarts = 0
        self.session_key = answer.session_key
        self.server_key = answer.server_key  # proven: later logins expect it
        self.ticket, self.resumed = answer.ticket, answer.resumed
        self.public_endpoint = answer.public_endpoint
        self._refresh_interval = self.config.refresh_interval or answer.lifetime / 3
        self._refresh_at = now + self._refresh_interval
        self.state = LoginState.LOGGED_IN
        if self.relayed is not None:
            self._refresh_at = now  # a re-login: tell the new registration our relay
        self._events.append(
            LoggedIn(answer.public_endpoint, answer.lifetime, answer.turn, answer.server_key)
        )
        online = self.reachability.logged_in(answer.public_endpoint)
        if online is not None:
            self._events.append(online)

    def _fail_login(self, error: ErrorCode | None, now: float) -> None:
        reason = "unexpected answer" if error is None else error.reason
        self._login_failed(reason, None if error is None else error.code, now)

    def _login_failed(self, reason: str, code: int | None, now: float) -> None:
        if self.reachability.ever_online:
            # Refused or unanswered now (a restarting server, a full one) is not forever:
            # keep trying, ever more slowly.
            self._lose(f"login failed ({reason})", now)
            return
        self.state = LoginState.FAILED
        self._events.append(LoginFailed(reason, code))

    def _lose(self, reason: str, now: float) -> None:
        """Not registered (any more): stop what assumed we were, schedule the next login."""
        self._cancel(LoginRequest, HandshakeLoginRequest, RefreshRequest)
        self._refresh_at = None
        self._restarts = 0
        self.state = LoginState.OFFLINE
        offline = self.reachability.lost(reason, now)
        if offline is not None:
            self._events.append(offline)

    def _cancel(self, *kinds: type) -> None:
        for transaction_id, purpose in list(self._purpose.items()):
            if isinstance(purpose, kinds):
                self._stun.cancel(transaction_id)
                del self._purpose[transaction_id]

    def _send_handshake_login(self, challenge: bytes, server_key: bytes, now: float) -> None:
        private = (
            (RvAttr.PRIVATE_ENDPOINT, endpoint) for endpoint in self.config.private_endpoints
        )
        rtt = () if self.rtt is None else ((RvAttr.RTT, round(self.rtt * 1_000_000)),)
        nat_type = (RvAttr.NAT_TYPE, str(self.config.nat_type))
        attributes = (*self._identity_attributes(), (RvAttr.CHALLENGE, challenge))
        unsent = self._request(RvMethod.LOGIN, *attributes, *private, nat_type, *rtt)
        ticket = self.ticket
        self._handshake = (
            LoginResumption(ticket, challenge)
            if ticket is not None and ticket.server_key == server_key
            else LoginHandshake(self._static, server_key)
        )
        data = self._handshake.request(unsent)
        self._start_encoded(unsent.transaction_id, data, now, HandshakeLoginRequest())

    def _send_refresh(self, now: float) -> None:
        attributes: list[tuple[int, object]] = [(AttrType.USERNAME, self.config.name)]
        if self.rtt is not None:
            attributes.append((RvAttr.RTT, round(self.rtt * 1_000_000)))
        if self.relayed is not None:
            attributes.append((RvAttr.RELAYED_ENDPOINT, self.relayed))
        self._start(
            self._request(RvMethod.REFRESH, *attributes), now, RefreshRequest(), integrity=True
        )

    def _authentic(self, message: StunMessage) -> bool:
        return self.session_key is not None and message.check_integrity(self.session_key)

    def _on_introduction(self, message: StunMessage, now: float) -> None:
        if not self._authentic(message):
            return
        reply = message.reply(MessageClass.SUCCESS)
        assert self.session_key is not None
        self._outbox.append(
            (reply.encode(integrity_key=self.session_key, fingerprint=True), self.config.server)
        )
        if message.transaction_id in self._seen_introductions:
            return  # a retransmission: answered again, reported once
        if len(self._seen_introductions) >= 1024:
            self._seen_introductions.clear()  # retransmissions span seconds, not thousands
        self._seen_introductions.add(message.transaction_id)
        try:
            introduction = Introduction.from_message(message)
        except StunDecodeError:
            return
        self._events.append(Introduced(introduction, now))
