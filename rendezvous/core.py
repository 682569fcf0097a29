"""The rendezvous server, sans I/O: the one place that decides which service a datagram is
for, with one per-source rate limit and one clock (``now`` in, ``wall_offset`` for the wall
clock that TURN REST usernames carry).

Routing order, for a datagram from a client (over UDP, or one message over TCP):

1. TURN methods and ChannelData (``is_turn_datagram``) -> the embedded TURN server, if any;
2. rendezvous methods (``rvproto.is_rv_datagram``) -> login and introductions;
3. anything else -> the STUN Binding service (RFC 5780 on up to four sockets).

Everything to send comes out of ``datagrams_to_send`` as :class:`~rendezvous.routes.Transmit`
with the route to send it by: answers by the route their request came by (an answer to a UDP
request goes over UDP even should a TCP client have the same address and port),
introductions by the route the peer logged in by, relayed data by the allocation's relay
socket. The adapters (``rendezvous.adapters``, the simulator in tests/support) only move
bytes::

    core = RendezvousCore(config, NameRegistry(), turn=turn_config)
    answer = core.plain_binding_responder(local)(data, source, now)  # the hot path, or
    core.receive_datagram(data, source, UdpSocket(local), now)       # everything else
    for transmit in core.datagrams_to_send(now): ...
    # relays_to_close() / relays_to_open() / relay_opened() or relay_failed() for each
    # opened; get_timer() / handle_timer()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import structlog

from rendezvous.binding import BindingService, PlainBindingResponder
from rendezvous.introduced import IntroducedPeers
from rendezvous.introductions import IntroductionService, RendezvousConfig
from rendezvous.ratelimit import SourceRateLimiter, cost_of
from rendezvous.registration import Registration
from rendezvous.registry import NameRegistry
from rendezvous.routes import ClientVia, TcpConnection, Transmit, UdpSocket, address_text
from rendezvous.turn_config import TurnConfig, is_turn_datagram
from rendezvous.turn_server import TurnServer
from rvproto.messages import is_rv_datagram
from stunproto import StunError
from stunproto.attributes import Address

log = structlog.get_logger()


class RendezvousCore:
    def __init__(
        self,
        config: RendezvousConfig,
        registry: NameRegistry,
        *,
        turn: TurnConfig | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_offset: float = 0.0,
    ) -> None:
        if turn is not None and config.turn_secret is None:
            # The embedded relay and the credentials we issue share one secret.
            config = replace(config, turn_secret=turn.shared_secret)
        self.config = config
        # One bucket per source IP for the whole server (STUN, rendezvous and TURN requests;
        # ChannelData has the relay's bandwidth quota instead).
        self.limiter = SourceRateLimiter(config.stun.rate_limit)
        self.binding = BindingService(config.stun, self.limiter)
        # The embedded relay permits only peers introduced lately (rendezvous.introduced):
        # its credentials go to every logged-in peer.
        window = None if turn is None else turn.introduced_peers_window
        self.introduced = (
            None
            if turn is None or window is None
            else IntroducedPeers(window, max_entries=turn.introduced_peers_max)
        )
        self.introductions = IntroductionService(
            config,
            registry,
            random_bytes=random_bytes,
            wall_offset=wall_offset,
            introduced=self.introduced,
        )
        # (The policy gets the name of the TURN REST username "expiry:name": turn_auth.)
        policy = None if self.introduced is None else self.introduced.permits
        self.turn = (
            TurnServer(turn, random_bytes=random_bytes, limiter=self.limiter, peer_policy=policy)
            if turn is not None
            else None
        )
        self._wall_offset = wall_offset
        self._out: list[Transmit] = []
        self._failures = 0  # datagrams dropped because handling them raised (a bug)
        self._failure_logged_at = -1.0

    @property
    def local_addresses(self) -> tuple[Address, ...]:
        """The STUN sockets to bind (primary first)."""
        return self.binding.local_addresses

    def online(self, name: str, now: float) -> Registration | None:
        return self.introductions.online(name, now)

    def serves(self, source: Address, via: ClientVia, now: float) -> bool:
        """Whether the client at ``source`` by ``via`` is logged in or holds a relay
        allocation: what a TCP connection must be to keep its slot past a short idle."""
        if self.introductions.serves(source, via, now):
            return True
        return self.turn is not None and self.turn.serves(source, via, now)

    # ------------------------------------------------------------------ datagrams

    def plain_binding_responder(self, local: Address) -> PlainBindingResponder:
        """The hot path for the STUN socket at ``local``: ``(data, source, now)`` -> the
        answer to a plain Binding request (send it from ``local`` back to ``source``),
        ``b""`` when the rate limit dropped it, None for anything else (then call
        ``receive_datagram``). A plain Binding request is 20 bytes and never TURN's nor the
        rendezvous's, so answering it first keeps the routing order."""
        return self.binding.responder(local)

    def receive_datagram(self, data: bytes, source: Address, via: ClientVia, now: float) -> None:
        """A datagram (or a TCP message) from a client at ``source`` that came by ``via``.
        Never raises for what arrives: a datagram that trips a bug is dropped and logged
        (at most once a second, with how many were dropped since), and the next one is
        served as if it never came."""
        try:
            self._receive(data, source, via, now)
        except StunError:
            pass  # (malformed, or an answer that cannot be encoded: nothing to send)
        except Exception as exc:  # containment: one datagram never takes the server down
            self._failures += 1
            if now >= self._failure_logged_at + 1.0:
                self._failure_logged_at = now
                log.error(
                    "datagram_failed",
                    source=address_text(source),
                    error=f"{type(exc).__name__}: {exc}",
                    failures=self._failures,
                )

    def _receive(self, data: bytes, source: Address, via: ClientVia, now: float) -> None:
        turn = self.turn
        if turn is not None and is_turn_datagram(data):
            self._out += turn.handle(data, source, via, now, now + self._wall_offset)
            return
        if (
            len(data) < 20
            or data[0] >= 0x40
            or not self.limiter.allow(source[0], now, cost_of(len(data)))
        ):
            return
        if is_rv_datagram(data):
            answer = self.introductions.answer(data, source, via, now)
            if answer is not None:
                self._out.append(Transmit(answer, source, via))
            return
        local = via.local if isinstance(via, UdpSocket) else via.listener
        transmit = self.binding.answer(data, source, local, now)
        if transmit is None:
            return
        if isinstance(via, TcpConnection):
            if transmit.via != UdpSocket(via.listener) or transmit.destination != source:
                # CHANGE-REQUEST or RESPONSE-PORT (RFC 5780) ask for an answer from another
                # address or to another port: meaningful over UDP only.
                log.debug("tcp_reply_needs_udp", source=address_text(source))
                return
            transmit = Transmit(transmit.data, source, via)
        self._out.append(transmit)

    def receive_relayed(self, relay: Address, data: bytes, peer: Address, now: float) -> None:
        """A datagram from ``peer`` on the TURN relay socket bound at ``relay``."""
        if self.turn is not None:
            self._out += self.turn.handle_relayed(relay, data, peer, now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out = self._out
        self._out = []
        introductions = self.introductions.datagrams_to_send(now)
        if introductions:
            out += introductions
        return out

    # ------------------------------------------------------------------ relay sockets

    @property
    def relays_pending(self) -> bool:
        """Whether there are relay sockets to open or close (cheap: ask after each call)."""
        return self.turn is not None and self.turn.relays_pending

    def relays_to_open(self) -> list[Address]:
        return self.turn.relays_to_open() if self.turn is not None else []

    def relays_to_close(self) -> list[Address]:
        return self.turn.relays_to_close() if self.turn is not None else []

    def relay_opened(self, relay: Address, now: float) -> None:
        """The adapter bound ``relay``: the held Allocate answer is queued to send."""
        if self.turn is not None:
            self._out += self.turn.relay_opened(relay, now)

    def relay_failed(self, relay: Address, now: float) -> None:
        """The adapter could not bind ``relay``: the client's Allocate gets 508 (queued)."""
        if self.turn is not None:
            self._out += self.turn.relay_failed(relay, now)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        at = self.introductions.get_timer()
        if self.turn is not None:
            relay_at = self.turn.get_timer()
            if at is None or (relay_at is not None and relay_at < at):
                at = relay_at
        return at

    def handle_timer(self, now: float) -> None:
        self.introductions.handle_timer(now)
        if self.turn is not None:
            self.turn.handle_timer(now)
