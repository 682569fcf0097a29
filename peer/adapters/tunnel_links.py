"""asyncio adapter: one connection per peer for every tunnel to it.

Forwards, SOCKS servers and an exposer on one ``Peer`` share the connection to a given
peer (a second ``connect`` would replace the first session, and every stream on it):
``get`` returns the open one, or makes one, once, however many callers wait. A
connection the exposer accepted is offered here too, so that forwarding back to a peer
that forwards to us reuses it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from peer.adapters.connection import Connection

if TYPE_CHECKING:
    from peer.adapters.peer import Peer


class TunnelLinks:
    def __init__(self, me: Peer, connect_timeout: float = 30.0) -> None:
        self._me = me
        self._timeout = connect_timeout
        self._open: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}

    async def get(self, peer: str) -> Connection:
        """The open connection to ``peer``; raises what ``Peer.connect`` raises."""
        connection = self._open.get(peer)
        if connection is not None and connection.closed is None:
            return connection
        pending = self._connecting.get(peer)
        if pending is None:
            pending = self._connecting[peer] = asyncio.ensure_future(self._connect(peer))
            # (Retrieved even when every waiter was cancelled: no "never retrieved".)
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(pending)

    def offer(self, connection: Connection) -> None:
        current = self._open.get(connection.peer)
        if current is None or current.closed is not None:
            self._open[connection.peer] = connection

    async def _connect(self, peer: str) -> Connection:
        try:
            connection = await self._me.connect(peer, self._timeout)
        finally:
            del self._connecting[peer]
        self._open[peer] = connection
        return connection
