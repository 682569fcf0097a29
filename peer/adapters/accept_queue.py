"""Connections on their way to the application, for ``Peer`` (peer.adapters.peer): the
ones peers made to us until ``Peer.accept()`` takes them (:class:`AcceptQueue`, bounded),
and ours until the peer has taken them (:class:`PendingConnects`).

Nothing is left open silently. A connection a peer makes to us is screened (``screen``:
say no to some), then handed to a waiting ``accept()``, queued up to the backlog, or
refused: closed at once with a reason, which the caller's ``connect()`` raises as
:class:`ConnectionRefused`. That works because ``connect()`` returns only once the peer
has answered our first packet on the channel: an acknowledgement (``Peer`` pings at once
when it takes a connection) or, when it refuses, its close.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from peer.errors import PeerError

if TYPE_CHECKING:
    from peer.adapters.connection import Connection

# What a peer refuses a connection with when nobody takes it: nobody ever asked for
# incoming connections (``accept()`` never called), or the backlog is full.
NOT_ACCEPTING = "not accepting connections"
BACKLOG_FULL = "backlog full"

# screen(name): None admits the connection from ``name``, a string refuses it (the reason).
Screen = Callable[[str], str | None]


class ConnectionRefused(PeerError):
    """The peer closed the connection before taking it: it was busy, not accepting, its
    backlog full (``reason``, as the peer gave it)."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer} refused the connection: {reason}")
        self.peer = peer
        self.reason = reason


class AcceptQueue:
    """Incoming connections until ``get()`` takes them: at most ``backlog`` wait."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.screen: Screen | None = None
        self._waiting: deque[Connection] = deque()
        self._getters: deque[asyncio.Future[Connection]] = deque()
        self._ever_asked = False  # someone called get(): then a full queue is a full backlog
        self._closed: str | None = None

    def offer(self, connection: Connection) -> str | None:
        """Take ``connection`` (None) or say why to refuse it."""
        if self._closed is not None:
            return self._closed
        if self.screen is not None and (reason := self.screen(connection.peer)) is not None:
            return reason
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(connection)
                return None
        self._prune()
        if len(self._waiting) >= self.backlog:
            return BACKLOG_FULL if self._ever_asked else NOT_ACCEPTING
        self._waiting.append(connection)
        return None

    async def get(self) -> Connection:
        self._ever_asked = True
        self._prune()
        if self._waiting:
            return self._waiting.popleft()
        if self._closed is not None:
            raise PeerError(f"no more connections: {self._closed}")
        getter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            return await getter
        except asyncio.CancelledError:
            if getter.done() and not getter.cancelled() and getter.exception() is None:
                self._waiting.appendleft(getter.result())  # handed over as we were cancelled
            raise

    def close(self, reason: str) -> None:
        """No more connections: waiting ``get()`` calls raise, later offers are refused."""
        self._closed = reason
        for getter in self._getters:
            if not getter.done():
                getter.set_exception(PeerError(f"no more connections: {reason}"))
        self._getters.clear()

    def _prune(self) -> None:
        """Forget the connections that closed while they waited (the caller hung up)."""
        if any(connection.closed is not None for connection in self._waiting):
            self._waiting = deque(c for c in self._waiting if c.closed is None)


class PendingConnects:
    """``connect()`` calls under way, by peer name: each resolves once the peer took the
    connection (``confirmed``), or fails with why it did not."""

    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[Connection]] = {}
        self._confirming: dict[str, Connection] = {}  # connected, not yet answered

    def wait(self, name: str) -> asyncio.Future[Connection]:
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters[name] = waiter
        return waiter

    def forget(self, name: str, waiter: asyncio.Future[Connection]) -> None:
        if self._waiters.get(name) is waiter:
            del self._waiters[name]

    def connected(self, connection: Connection, *, initiator: bool) -> bool:
        """A channel came up: True if a ``connect()`` call takes it (the initiator's once
        the peer answered; the responder's, in a simultaneous connect, at once)."""
        waiter = self._waiters.get(connection.peer)
        if waiter is None or waiter.done():
            return False
        if initiator:
            self._confirming[connection.peer] = connection
        else:
            connection._answer()  # the initiator's connect() waits for this
            waiter.set_result(connection)
        return True

    def confirm(self, answered: Callable[[Connection], bool]) -> tuple[Connection, ...]:
        """Hand over the connections the peer has answered on; those whose ``connect()``
        gave up meanwhile come back (nobody asked for them any more)."""
        if not self._confirming:
            return ()  # (every pump asks)
        unclaimed: list[Connection] = []
        for name, connection in list(self._confirming.items()):
            if answered(connection):
                del self._confirming[name]
                waiter = self._waiters.get(name)
                if waiter is not None and not waiter.done():
                    waiter.set_result(connection)
                else:
                    unclaimed.append(connection)
        return tuple(unclaimed)

    def closed(self, name: str, reason: str, *, replaced: bool) -> None:
        """The session with ``name`` closed; ``replaced``: a newer one took its place (the
        caller waits for that one)."""
        confirming = self._confirming.pop(name, None)
        if replaced:
            return
        if confirming is not None and reason.startswith(f"closed by {name}"):
            refusal = confirming._transport.close_reason or "no reason given"
            self.fail(name, ConnectionRefused(name, refusal))
        else:
            self.fail(name, PeerError(reason))

    def fail(self, name: str, error: PeerError) -> None:
        waiter = self._waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
