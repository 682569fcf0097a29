"""Sans-I/O TURN server (RFC 8656) over UDP (and TCP to clients), with coturn's "TURN REST
API" credentials (``rendezvous.turn_auth``).

The caller owns the sockets: ``handle`` takes datagrams from clients, with the route they
came by (a client-facing UDP socket or a TCP connection), ``handle_relayed`` those arriving
on an allocation's relay socket, and both return what to send as
:class:`~rendezvous.routes.Transmit` (answers and relayed data go back to a client by its
route, data to peers from the allocation's ``RelaySocket``). ``relays_to_open`` /
``relays_to_close`` say which relay sockets to bind and close, and the adapter reports each
one it was asked to open: ``relay_opened`` (the held Allocate success answer goes out only
then) or ``relay_failed`` (the client gets 508 instead, and the allocation is gone). Relaying
to peers stays UDP (RFC 8656 allows TCP only between client and server, short of RFC 6062).

``peer_policy(user, ip, now)``, when given, decides which peers a user may install
permissions for (embedded in the rendezvous: only peers it was introduced to,
``rendezvous.introduced``); refused ones get 403. None: any peer the configuration allows.

State (``rendezvous.turn_allocations``) and the answers kept for retransmitted requests
are bounded by the configuration and swept by ``handle_timer``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import structlog

from rendezvous.answers import AnswerCache
from rendezvous.ratelimit import SourceRateLimiter, cost_of
from rendezvous.routes import ClientVia, Transmit
from rendezvous.turn_allocations import Allocation, AllocationTable, FiveTuple
from rendezvous.turn_auth import Credentials, TurnAuthenticator
from rendezvous.turn_config import SWEEP_INTERVAL, TurnConfig
from rendezvous.turn_requests import PeerPolicy, TurnRequests
from stunproto import AttrType, MessageClass, Method, StunDecodeError, StunMessage
from stunproto.attributes import Address
from stunproto.channel_data import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    RFC5766_CHANNEL_MAX,
    decode_channel_data,
    encode_channel_data,
)

log = structlog.get_logger()

RequestHandler = Callable[[StunMessage, FiveTuple, Credentials, float], bytes]


# A Data indication's payload at most: a 65,507-byte UDP payload less the STUN header, an
# IPv6 XOR-PEER-ADDRESS and the DATA attribute's own header.
MAX_INDICATED_DATA = 65_507 - 20 - 24 - 4
SEND_INDICATION_TYPE = b"\x00\x16"  # method Send (0x006), class indication
ALLOCATE_SUCCESS_TYPE = b"\x01\x03"  # method Allocate (0x003), class success


class TurnServer:
    def __init__(
        self,
        config: TurnConfig,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        limiter: SourceRateLimiter | None = None,
        peer_policy: PeerPolicy | None = None,
    ) -> None:
        self.config = config
        # Embedded in the rendezvous, the server's one per-source limiter; standalone, ours.
        self.limiter = limiter if limiter is not None else SourceRateLimiter(config.rate_limit)
        self._auth = TurnAuthenticator(config, random_bytes(32))
        # Port choice and Data indication ids need unpredictability, not a syscall per packet.
        self._rng = random.Random(random_bytes(16))
        self._advertised_ip = config.external_ip or config.relay_ip
        # Our own IPs are valid peers only at relay ports (TURN client to TURN client): any
        # other port may be the server's own (the rendezvous, this TURN port), and relaying
        # into it would let a client loop the server onto itself or borrow its address.
        self._own_ips = frozenset({config.relay_ip, self._advertised_ip})
        self._burst = config.bandwidth_burst or max(config.bandwidth, 65536.0)
        self._channel_max = RFC5766_CHANNEL_MAX if config.rfc5766_channels else CHANNEL_MAX
        self._first_channel_byte, self._last_channel_byte = CHANNEL_MIN >> 8, self._channel_max >> 8
        self._table = AllocationTable(config, self._rng)
        self._requests = TurnRequests(
            config, self._table, self._auth, self._rng, self._burst, peer_policy
        )
        self._answers: AnswerCache[tuple[Address, ClientVia, bytes]] = AnswerCache(
            max_entries=config.max_cached_answers
        )
        self._next_sweep: float | None = None
        self.dropped = 0  # relayed datagrams dropped (no permission, over bandwidth, ...)
        self._handlers: dict[int, RequestHandler] = {
            Method.ALLOCATE: self._requests.allocate,
            Method.REFRESH: self._requests.refresh,
            Method.CREATE_PERMISSION: self._requests.create_permission,
            Method.CHANNEL_BIND: self._requests.channel_bind,
        }

    # ------------------------------------------------------------------ socket interface

    def handle(
        self, data: bytes, source: Address, via: ClientVia, now: float, wall_now: float
    ) -> list[Transmit]:
        """A datagram from a client at ``source`` that came by ``via``."""
        try:
            sends = self._dispatch(data, source, via, now, wall_now)
        except StunDecodeError:
            sends = []
        self._arm(now)
        return sends

    def handle_relayed(
        self, relay: Address, data: bytes, peer: Address, now: float
    ) -> list[Transmit]:
        """A datagram from ``peer`` on the relay socket ``relay``: to the client, if permitted."""
        allocation = self._table.by_relay.get(relay)
        if allocation is None or allocation.expires <= now:
            return []
        if not allocation.permitted(peer[0], now) or not self._spend(allocation, len(data), now):
            self.dropped += 1
            return []
        client, via = allocation.five_tuple
        number = allocation.channel_of.get(peer)
        if number is not None and allocation.channel(number, now) is not None:
            # ChannelData over UDP needs no padding (RFC 8656 section 12.5; a TCP adapter
            # pads it with stunproto.framing).
            out = encode_channel_data(number, data)
        elif len(data) > MAX_INDICATED_DATA:
            # (A peer datagram near 64 KB does not fit a Data indication's 16-bit length
            # with an IPv6 XOR-PEER-ADDRESS: it is dropped, like any datagram too large.)
            self.dropped += 1
            return []
        else:
            indication = StunMessage(
                Method.DATA,
                MessageClass.INDICATION,
                self._rng.getrandbits(96).to_bytes(12, "big"),
                ((AttrType.XOR_PEER_ADDRESS, peer), (AttrType.DATA, data)),
            )
            out = indication.encode()
        return [Transmit(out, client, via)]

    def serves(self, source: Address, via: ClientVia, now: float) -> bool:
        """Whether the client at ``source`` by ``via`` holds a live allocation."""
        return self._table.live((source, via), now) is not None

    def relays_to_open(self) -> list[Address]:
        """Relay addresses to bind now (each call returns them once)."""
        return self._table.relays_to_open()

    def relays_to_close(self) -> list[Address]:
        """Relay sockets to close now (each call returns them once)."""
        return self._table.relays_to_close()

    @property
    def relays_pending(self) -> bool:
        """Whether ``relays_to_open`` or ``relays_to_close`` has anything (cheap to ask)."""
        return self._table.relays_pending

    def relay_opened(self, relay: Address, now: float) -> list[Transmit]:
        """The adapter bound ``relay``: the Allocate success answer held for it, to send."""
        allocation = self._table.by_relay.get(relay)
        if allocation is None or allocation.held is None:
            return []
        request, answer = allocation.held
        allocation.held = None
        return [self._answered(request, allocation.five_tuple, answer, now)]

    def relay_failed(self, relay: Address, now: float) -> list[Transmit]:
        """The adapter could not bind ``relay``: drop its allocation (its quotas freed), keep
        away from that port for a while, and answer the held Allocate with 508."""
        allocation = self._table.relay_failed(relay, now)
        self._arm(now)
        if allocation is None or allocation.held is None:
            return []
        request = allocation.held[0]
        answer = self._auth.error(request, 508, "Insufficient Capacity", key=allocation.key)
        return [self._answered(request, allocation.five_tuple, answer, now)]

    def get_timer(self) -> float | None:
        return self._next_sweep

    def handle_timer(self, now: float) -> None:
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = None
        self._sweep(now)
        self._arm(now)

    @property
    def allocation_count(self) -> int:
        return len(self._table)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(
        self, data: bytes, source: Address, via: ClientVia, now: float, wall_now: float
    ) -> list[Transmit]:
        if not data:
            return []
        if self._first_channel_byte <= data[0] <= self._last_channel_byte:
            return self._channel_data(data, (source, via), now)
        if data[:2] == SEND_INDICATION_TYPE and self._table.live((source, via), now) is not None:
            # Relayed data, like ChannelData: the allocation's bandwidth quota applies, not
            # the request rate limit (a client whose channel is not bound yet would be cut
            # to the limit's few hundred datagrams a second).
            message = StunMessage.parse(data)
            if message.legacy:
                return []
            return self._send_indication(message, (source, via), now)
        if (
            len(data) < 20
            or data[0] >= 0x40
            or not self.limiter.allow(source[0], now, cost_of(len(data)))
        ):
            return []
        message = StunMessage.parse(data)
        if message.legacy:
            return []  # TURN needs the magic cookie (XOR addresses, RFC 8656)
        if message.message_class is MessageClass.INDICATION:
            if message.method == Method.SEND:
                return self._send_indication(message, (source, via), now)
            return []
        if message.message_class is not MessageClass.REQUEST:
            return []
        if message.method == Method.BINDING:
            # Like coturn: the TURN port also answers plain STUN (ICE gathers both at once).
            reply = message.reply(MessageClass.SUCCESS, (AttrType.XOR_MAPPED_ADDRESS, source))
            fingerprint = AttrType.FINGERPRINT in message
            return [Transmit(reply.encode(fingerprint=fingerprint), source, via)]
        handler = self._handlers.get(message.method)
        if handler is None:
            return [Transmit(self._auth.error(message, 400, "Bad Request"), source, via)]
        key = (source, via, message.transaction_id)
        cached = self._answers.get(key, now)
        if cached is not None:
            return [Transmit(cached, source, via)]
        if message.method == Method.ALLOCATE:
            pending = self._table.by_five.get((source, via))
            held = None if pending is None else pending.held
            if held is not None and held[0].transaction_id == message.transaction_id:
                return []  # a retransmission: answered once, when the relay socket is bound
        credentials = self._auth.authenticate(message, source, now, wall_now)
        if isinstance(credentials, bytes):
            return [Transmit(credentials, source, via)]  # stateless challenges are not cached
        answer = handler(message, (source, via), credentials, now)
        if answer[:2] == ALLOCATE_SUCCESS_TYPE:
            # Held until the adapter has bound the relay socket (relay_opened/relay_failed).
            self._table.by_five[(source, via)].held = (message, answer)
            return []
        return [self._answered(message, (source, via), answer, now)]

    def _answered(
        self, request: StunMessage, five: FiveTuple, answer: bytes, now: float
    ) -> Transmit:
        """``answer`` to ``request``, kept for its retransmissions."""
        source, via = five
        self._answers.put((source, via, request.transaction_id), answer, now)
        return Transmit(answer, source, via)

    # ------------------------------------------------------------------ relaying

    def _send_indication(self, message: StunMessage, five: FiveTuple, now: float) -> list[Transmit]:
        allocation = self._table.live(five, now)
        peer = message.get(AttrType.XOR_PEER_ADDRESS)
        data = message.get(AttrType.DATA)
        if allocation is None or not isinstance(peer, tuple) or not isinstance(data, bytes):
            return []
        return self._to_peer(allocation, peer, data, now)

    def _channel_data(self, data: bytes, five: FiveTuple, now: float) -> list[Transmit]:
        decoded = decode_channel_data(data, rfc5766=self.config.rfc5766_channels)
        allocation = self._table.live(five, now)
        if decoded is None or allocation is None:
            return []
        number, payload = decoded
        peer = allocation.channel(number, now)
        if peer is None:
            return []
        return self._to_peer(allocation, peer, payload, now)

    def _to_peer(
        self, allocation: Allocation, peer: Address, data: bytes, now: float
    ) -> list[Transmit]:
        if (
            peer[1] == 0
            or (peer[0] in self._own_ips and peer[1] not in self.config.relay_ports)
            or not allocation.permitted(peer[0], now)
            or not self._spend(allocation, len(data), now)
        ):
            self.dropped += 1
            return []
        return [Transmit(data, peer, allocation.relay_via)]

    def _spend(self, allocation: Allocation, size: int, now: float) -> bool:
        """Token bucket per allocation: a datagram over the budget is dropped, not queued."""
        tokens = allocation.tokens + (now - allocation.refilled) * self.config.bandwidth
        allocation.refilled = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < size:
            allocation.tokens = tokens
            return False
        allocation.tokens = tokens - size
        return True

    # ------------------------------------------------------------------ sweeping

    def _sweep(self, now: float) -> None:
        self._table.sweep(now)
        self._answers.expire(now)

    def _arm(self, now: float) -> None:
        if self._next_sweep is None and (self._table.busy or self._answers):
            self._next_sweep = now + SWEEP_INTERVAL
