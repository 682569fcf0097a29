"""``Connection``: the application's end of one secure channel, handed out by ``Peer``
(peer.adapters.peer), which feeds it the session's messages and its close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from peer.errors import LocalProtocolError
from peer.events import Connected, PathKind
from stunproto.attributes import Address

if TYPE_CHECKING:
    from peer.adapters.peer import Peer


class Connection:
    """A secure channel to one peer. Iterate it for messages; ``send`` is reliable and
    ordered."""

    def __init__(self, owner: Peer, event: Connected) -> None:
        self._owner = owner
        self.peer = event.peer
        self.path: PathKind = event.path
        self.remote: Address = event.remote
        self.connect_time = event.elapsed
        self.note = event.note
        self._messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed: str | None = None  # the reason, once closed

    async def send(self, data: bytes) -> None:
        if self.closed is not None:
            raise LocalProtocolError(f"connection to {self.peer} closed: {self.closed}")
        self._owner._agent_send(self.peer, data)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the peer has acknowledged everything sent so far."""
        await asyncio.wait_for(self._owner._until_acked(self.peer), timeout)

    async def close(self) -> None:
        self._owner._agent_close(self.peer)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    def _deliver(self, data: bytes) -> None:
        self._messages.put_nowait(data)

    def _end(self, reason: str) -> None:
        self.closed = reason
        self._messages.put_nowait(None)  # ends the iteration after what is queued

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._messages.get()
            if item is None:
                return
            yield item
