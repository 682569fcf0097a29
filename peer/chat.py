"""``peer chat``: a line chat over the punched, encrypted channel.

Without ``--to`` it serves every peer that connects: messages print as ``NAME: text``, a
typed line goes to everyone connected (``@name text``: to ``name`` alone), a peer leaving
is a status line and the chat goes on. With ``--to NAME`` it talks to NAME only: another
caller is refused ("busy in another chat", which its ``peer chat`` prints), and the chat
ends when NAME hangs up. On end of input, what is pending is delivered to each peer in
the order they came, each connection is closed, and it exits 0. What it prints:
peer.chat_output.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import IO, Any, TextIO

from peer.adapters.peer import Connection, Peer, PeerConfig
from peer.chat_output import ChatOutput, addressed, too_long
from peer.errors import PeerError
from peer.events import Offline, Online, PathChanged
from peer.identity import Identity
from peer.known_peers import KnownPeers
from stunproto.attributes import Address

BUSY = "busy in another chat"  # what a chat with --to tells another caller


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatOptions:
    server: Address
    name: str
    to: str | None
    identity: Identity
    known_peers: KnownPeers | None
    json: bool
    peer_config: PeerConfig
    connect_timeout: float = 30.0


def _endpoint(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _online(me: Peer, out: ChatOutput, public: Address) -> None:
    """The online line: at start, and each time the peer is back online (one format)."""
    out.event(
        "online",
        f"online as {me.name} ({me.identity.fingerprint}), public "
        f"{_endpoint(public)}, NAT {me.nat_type}, via {me.transport}",
        name=me.name,
        public=_endpoint(public),
        nat_type=str(me.nat_type),
        transport=str(me.transport),
    )


async def run_chat(
    options: ChatOptions,
    *,
    stdin: IO[bytes] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The chat, reading lines from ``stdin`` (a pipe; default sys.stdin) and printing to
    ``stdout`` and ``stderr`` (default sys's); the exit status."""
    out = ChatOutput(options.json, stdout or sys.stdout, stderr or sys.stderr)
    # A message is at most this long, so a line is (its "\r\n" aside).
    limit = options.peer_config.session.transport.max_message_size
    try:
        async with Peer(
            options.server,
            identity=options.identity,
            name=options.name,
            known_peers=options.known_peers,
            config=options.peer_config,
        ) as me:
            assert me.public_endpoint is not None
            _online(me, out, me.public_endpoint)
            room = ChatRoom(me, out, only=options.to)
            try:
                # (Waiting for bob may take hours: the registration may come and go.)
                room.start()
                if options.to is not None:
                    room.join(await me.connect(options.to, timeout=options.connect_timeout))
                pipe, reader = await _open_input(stdin or sys.stdin.buffer, limit)
                try:
                    return await room.converse(LineReader(reader, limit))
                finally:
                    pipe.close()
            finally:
                room.stop()
    except (PeerError, TimeoutError) as exc:
        out.error(str(exc) or "timed out")
        return 1


async def _open_input(
    stdin: IO[bytes], limit: int
) -> tuple[asyncio.ReadTransport, asyncio.StreamReader]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit + 2)  # (room for "\r\n")
    pipe, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    return pipe, reader


class LineTooLong(Exception):
    pass


class LineReader:
    """Typed lines, each at most ``limit`` bytes once its line end is stripped; a longer
    one is skipped whole (LineTooLong), however long it is."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self.limit = limit

    async def next(self) -> bytes | None:
        """The next line without its line end; None at the end of input."""
        skipping = False
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial  # the end of input: a last line without "\n", or b""
                if not line and not skipping:
                    return None
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)  # (in the buffer: drop them)
                skipping = True
                continue
            text = line.rstrip(b"\r\n")
            if skipping or len(text) > self.limit:
                raise LineTooLong(too_long(self.limit))
            return text


class ChatRoom:
    """The peers in one chat, in the order they came; ``only``: the one peer of ``--to``
    (the chat ends with it, other callers are refused)."""

    def __init__(self, me: Peer, out: ChatOutput, *, only: str | None) -> None:
        self.me = me
        self.out = out
        self.only = only
        self.connections: dict[str, Connection] = {}
        self._hung_up: set[Connection] = set()  # closed by us: no "left" line for them
        self._tasks: set[asyncio.Future[None]] = set()
        self._accepting: asyncio.Future[None] | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        self._spawn(self._watch_events())
        if self.only is None:
            self._accepting = self._spawn(self._accept_forever())
        else:
            self.me.screen_incoming(self._refuse)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def join(self, conn: Connection) -> None:
        seconds, note = conn.connect_time, conn.note
        self.out.connected(conn.peer, str(conn.path), _endpoint(conn.remote), seconds, note)
        self.connections[conn.peer] = conn  # (a reconnect: the old one ends on its own)
        self._spawn(self._receive(conn))

    async def converse(self, lines: LineReader) -> int:
        while not self.ended.done():
            reading = asyncio.ensure_future(lines.next())
            waits: set[asyncio.Future[Any]] = {reading, self.ended}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                break
            try:
                line = reading.result()
            except LineTooLong as exc:
                self.out.skipped(str(exc))
                continue
            if line is None:
                return await self._hang_up()
            await self._say(line)
        # --to: the one peer hung up (exit 0) or its path died (1).
        reason = self.ended.result()
        assert self.only is not None
        self.out.closed(self.only, reason, only=True)
        return 0 if reason.startswith("closed by") else 1

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _refuse(self, name: str) -> str:
        self.out.refused(name, BUSY)
        return BUSY

    async def _accept_forever(self) -> None:
        while True:
            self.join(await self.me.accept())

    async def _watch_events(self) -> None:
        """Status lines: online and offline (the registration), path changes."""
        out = self.out
        while True:
            event = await self.me.events.get()
            if isinstance(event, Online):
                _online(self.me, out, event.public_endpoint)
            elif isinstance(event, Offline):
                out.event(
                    "offline",
                    f"offline: {event.reason}; logging in again in {event.retry_in:.1f} s",
                    reason=event.reason,
                    retry_in=round(event.retry_in, 1),
                )
            elif isinstance(event, PathChanged) and event.peer in self.connections:
                out.path(event.peer, str(event.path), _endpoint(event.remote))

    async def _receive(self, conn: Connection) -> None:
        async for data in conn:
            self.out.message(conn.peer, data.decode(errors="replace"))
        if self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]
        if conn in self._hung_up:
            return
        reason = conn.closed or "closed"
        if self.only is not None:
            if not self.ended.done():
                self.ended.set_result(reason)
        else:
            self.out.left(conn.peer, reason)

    async def _say(self, line: bytes) -> None:
        name, text = (None, line) if self.only is not None else addressed(line)
        if name is not None:
            conn = self.connections.get(name)
            if conn is None:
                self.out.skipped(f"{name} is not in the chat")
                return
            to = [conn]
        else:
            to = list(self.connections.values())
            if not to:
                self.out.skipped("nobody is connected")
                return
        for conn in to:
            with contextlib.suppress(PeerError):  # it left meanwhile: _receive says so
                await conn.send(text)

    async def _hang_up(self) -> int:
        """End of input: to each peer in the order they came, deliver what is pending and
        close; 1 if something was not acknowledged."""
        if self._accepting is not None:
            self._accepting.cancel()
        status = 0
        for conn in list(self.connections.values()):
            if conn.closed is not None:
                continue  # it left meanwhile: _receive says so
            self._hung_up.add(conn)
            try:
                await conn.drain()
            except PeerError as exc:
                self.out.error(str(exc))
                status = 1
                continue
            await conn.close()
            self.out.closed(conn.peer, "end of input", only=self.only is not None)
        return status
