"""The TURN client's bookkeeping of permissions (per peer IP, RFC 8656 section 9) and channel
bindings (per peer address, section 12): their lifetimes, which to refresh, which to let
lapse, which to revive.

Permissions (300 s) and channel bindings (600 s) are refreshed only while in use: one is
renewed near the end of its lifetime only if data went to or came from that peer within the
last ``idle_timeout`` seconds. Otherwise it is left to lapse; traffic before it lapses
revives it at once, and the next ``send`` after it lapsed reinstalls it. One idle rule for
both (rather than "used since the last refresh") keeps a channel's decision in step with
its permission's, although their refresh periods differ.

The table never sends anything: it marks a lease pending and hands back the request to
send (peer.turn_requests); the client sends it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from peer.errors import LocalProtocolError
from peer.events import (
    ChannelBindFailed,
    ChannelBound,
    ChannelExpired,
    PermissionCreated,
    PermissionExpired,
    PermissionFailed,
    TurnEvent,
)
from peer.turn_requests import ChannelRequest, LeaseRequest, PermissionRequest
from stunproto.attributes import Address
from stunproto.channel_data import CHANNEL_MAX, CHANNEL_MIN

PERMISSION_LIFETIME = 300.0  # RFC 8656 section 9, fixed: the server does not say
CHANNEL_LIFETIME = 600.0  # RFC 8656 section 12
FAILED_RETRY_DELAY = 30.0  # seconds before send() asks again for a refused permission/channel


@dataclass(slots=True)
class Lease:
    """A permission (per peer IP) or channel binding (per peer address) on the server."""

    expires_at: float | None = None  # our conservative view of the server's timer
    refresh_at: float | None = None
    last_use: float = -math.inf  # last send to or receive from the peer
    pending: bool = False  # a CreatePermission/ChannelBind is in flight
    announced: bool = False  # the Created/Bound event was emitted
    # After a failure send() waits this long before asking again on its own, so a server
    # that refuses does not get one request per datagram.
    retry_after: float = -math.inf

    def live(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at

    def wants_request(self, now: float) -> bool:
        """For send(): not installed, nothing in flight, not refused just now."""
        return not self.live(now) and not self.pending and now >= self.retry_after

    def revivable(self, now: float) -> bool:
        # Judged idle at its refresh time (so left to lapse) but in use again before it did:
        # refresh it now, or the peer's next datagrams would be dropped by the server.
        return self.refresh_at is None and self.live(now) and not self.pending

    def install(self, sent: float, lifetime: float, margin: float) -> None:
        """Granted by a request first sent at ``sent``: refreshed ``margin`` before its end
        (at least half-way through)."""
        self.expires_at = sent + lifetime
        self.refresh_at = sent + lifetime - min(margin, lifetime / 2)

    def fail(self, now: float) -> None:
        # Treated as gone even if the server may still hold it: we cannot refresh it anyway.
        self.pending, self.expires_at, self.refresh_at = False, None, None
        self.retry_after = now + FAILED_RETRY_DELAY


@dataclass(slots=True)
class ChannelLease(Lease):
    number: int = 0
    peer: Address = ("", 0)


class LeaseTable:
    def __init__(
        self, events: deque[TurnEvent], *, refresh_margin: float, idle_timeout: float
    ) -> None:
        self._events = events  # the client's: lease events go out with its own
        self._margin = refresh_margin
        self._idle_timeout = idle_timeout
        self.permissions: dict[str, Lease] = {}
        self.channels: dict[Address, ChannelLease] = {}
        self.by_number: dict[int, ChannelLease] = {}

    def clear(self) -> None:
        self.permissions.clear()
        self.channels.clear()
        self.by_number.clear()

    def permission(self, ip: str) -> Lease:
        return self.permissions.setdefault(ip, Lease())

    def channel(self, peer: Address) -> ChannelLease:
        """The peer's channel, numbered on first use: a peer keeps its number for the life
        of the allocation, so a number never moves to another peer."""
        channel = self.channels.get(peer)
        if channel is None:
            number = CHANNEL_MIN + len(self.channels)
            if number > CHANNEL_MAX:
                raise LocalProtocolError("no channel numbers left")
            channel = ChannelLease(number=number, peer=peer)
            self.channels[peer] = self.by_number[number] = channel
        return channel

    def ask_permission(self, ip: str, lease: Lease) -> PermissionRequest:
        lease.pending = True
        return PermissionRequest(ip)

    def ask_channel(self, channel: ChannelLease) -> ChannelRequest:
        channel.pending = True
        return ChannelRequest(channel.peer, channel.number)

    def before_send(
        self, peer: Address, now: float, *, bind: bool = False
    ) -> tuple[LeaseRequest, ...]:
        """Data is about to go to ``peer``: what to request first (so that the server sees
        it before the data). With ``bind``, a peer without a channel gets one (while
        numbers last); a lapsed channel is rebound (which reinstalls the permission too),
        else a missing permission installed; then the use counts (``touch``)."""
        first: tuple[LeaseRequest, ...] = ()
        channel = self.channels.get(peer)
        if channel is None and bind and CHANNEL_MIN + len(self.channels) <= CHANNEL_MAX:
            channel = self.channel(peer)
        if channel is not None and channel.wants_request(now):
            first = (self.ask_channel(channel),)
        else:
            permission = self.permissions.get(peer[0])
            if permission is None or permission.wants_request(now):
                first = (self.ask_permission(peer[0], self.permission(peer[0])),)
        return first + self.touch(peer, now)

    def touch(self, peer: Address, now: float) -> tuple[LeaseRequest, ...]:
        """Data went to or came from ``peer``: what must be revived (usually nothing; this
        runs per relayed datagram, so the usual answer allocates nothing)."""
        revive: tuple[LeaseRequest, ...] = ()
        lease = self.permissions.get(peer[0])
        if lease is not None:
            lease.last_use = now
            if lease.revivable(now):
                revive = (self.ask_permission(peer[0], lease),)
        channel = self.channels.get(peer)
        if channel is not None:
            channel.last_use = now
            if channel.revivable(now):
                revive = (*revive, self.ask_channel(channel))
        return revive

    # ------------------------------------------------------------------ answers

    def granted(self, request: LeaseRequest, sent: float) -> None:
        if isinstance(request, PermissionRequest):
            lease = self.permissions.get(request.ip)
            if lease is None:
                return  # dropped meanwhile (close)
            lease.pending = False
            lease.install(sent, PERMISSION_LIFETIME, self._margin)
            if not lease.announced:
                lease.announced = True
                self._events.append(PermissionCreated(request.ip))
            return
        peer = request.peer
        channel = self.channels.get(peer)
        if channel is None:
            return
        channel.pending = False
        channel.install(sent, CHANNEL_LIFETIME, self._margin)
        # RFC 8656 section 12.2: a ChannelBind also installs or refreshes the permission
        # (which keeps its own pending request, if any).
        lease = self.permissions.setdefault(peer[0], Lease(announced=True))
        if lease.expires_at is None or lease.expires_at < sent + PERMISSION_LIFETIME:
            lease.install(sent, PERMISSION_LIFETIME, self._margin)
        if not channel.announced:
            channel.announced = True
            self._events.append(ChannelBound(peer, channel.number))

    def refused(self, request: LeaseRequest, reason: str, code: int | None, now: float) -> None:
        if isinstance(request, PermissionRequest):
            lease = self.permissions.get(request.ip)
            if lease is not None:
                lease.fail(now)
                self._events.append(PermissionFailed(request.ip, reason, code))
            return
        channel = self.channels.get(request.peer)
        if channel is not None:
            channel.fail(now)
            self._events.append(ChannelBindFailed(request.peer, channel.number, reason, code))

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[LeaseRequest]:
        """Refresh what is due and in use; let the idle lapse (events say so)."""
        requests: list[LeaseRequest] = []
        for ip, lease in list(self.permissions.items()):
            if self._refresh_due(lease, now):
                requests.append(self.ask_permission(ip, lease))
            elif self._expired(lease, now):
                del self.permissions[ip]
                self._events.append(PermissionExpired(ip))
        for peer, channel in self.channels.items():
            if self._refresh_due(channel, now):
                requests.append(self.ask_channel(channel))
            elif self._expired(channel, now):
                self._events.append(ChannelExpired(peer, channel.number))
        return requests

    def deadlines(self) -> list[float | None]:
        out: list[float | None] = []
        for lease in [*self.permissions.values(), *self.channels.values()]:
            if not lease.pending:
                out += [lease.refresh_at, lease.expires_at]
        return out

    def _refresh_due(self, lease: Lease, now: float) -> bool:
        if lease.pending or lease.refresh_at is None or now < lease.refresh_at:
            return False
        lease.refresh_at = None  # decided now, either way
        return now - lease.last_use < self._idle_timeout

    @staticmethod
    def _expired(lease: Lease, now: float) -> bool:
        if lease.pending or lease.expires_at is None or now < lease.expires_at:
            return False
        lease.expires_at = None
        return True
