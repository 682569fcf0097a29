"""The TCP connection from a peer to the rendezvous (for networks without UDP): RFC 8489
framing both ways, and reopening after a loss.

It decides nothing. ``Peer`` opens it before the first login; when it is lost,
``on_lost`` tells the peer (start-up or the agent decides what that means); it is opened
again only when ``wanted()`` says the agent's login needs it (the agent's backoff sets the
pace), and what that login sent meanwhile is written once it is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from natprobe.reach import os_reason
from peer.errors import PeerError, ServerUnreachable
from stunproto.attributes import Address
from stunproto.framing import FramingError, StreamDecoder, frame

log = structlog.get_logger()

MAX_BACKLOG = 64  # datagrams a login queues while the connection is being reopened


class ServerConnection:
    def __init__(
        self,
        server: Address,
        *,
        timeout: float,
        on_datagram: Callable[[bytes], None],
        on_lost: Callable[[str], None],
        wanted: Callable[[], bool],
        on_reopened: Callable[[], None],
    ) -> None:
        self.server = server
        self._timeout = timeout
        self._on_datagram = on_datagram
        self._on_lost = on_lost
        self._wanted = wanted
        self._on_reopened = on_reopened
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Future[None] | None = None
        self._reopening: asyncio.Future[None] | None = None
        self._backlog: list[bytes] = []

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        """Connect; a failure is a ServerUnreachable in one line ("no rendezvous server
        answers at HOST:PORT (TCP: connection refused)"), a login failure like any other."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self.server), self._timeout
            )
        except TimeoutError:
            detail = f"TCP: nothing within {self._timeout:g} s"
            raise ServerUnreachable(self.server, detail) from None
        except OSError as exc:
            raise ServerUnreachable(self.server, f"TCP: {os_reason(exc)}") from None
        self._writer = writer
        self._reader = asyncio.ensure_future(self._read(reader, writer))

    def send(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(frame(data))
            return
        # Lost. Only a login the agent started opens the connection again, so relayed
        # traffic cannot make us hammer a server that is down; until it is open, the
        # login's datagrams wait and the rest goes nowhere (as on any dead path).
        if self._reopening is None and not self._wanted():
            return
        if len(self._backlog) < MAX_BACKLOG:
            self._backlog.append(data)
        if self._reopening is None:
            self._reopening = asyncio.ensure_future(self._reopen())

    def close(self) -> None:
        for task in (self._reader, self._reopening):
            if task is not None:
                task.cancel()
        self._reader = self._reopening = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._backlog.clear()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = StreamDecoder()
        reason = "the server closed the TCP connection"
        try:
            while chunk := await reader.read(65536):
                for message in decoder.feed(chunk):
                    self._on_datagram(message)
        except (OSError, FramingError) as exc:
            log.warning("tcp_connection_lost", reason=str(exc))
            reason = f"the TCP connection to the server broke: {exc}"
        writer.close()
        if self._writer is writer:
            self._writer = None
        self._on_lost(reason)

    async def _reopen(self) -> None:
        try:
            await self.open()
        except PeerError as exc:
            log.info("tcp_reopen_failed", reason=str(exc))
            self._backlog.clear()
            self._reopening = None
            self._on_lost(str(exc))
            return
        log.info("tcp_reopened", server=f"{self.server[0]}:{self.server[1]}")
        self._reopening = None
        backlog, self._backlog = self._backlog, []
        for data in backlog:
            self.send(data)
        self._on_reopened()
