"""``Connection``: the application's end of one secure channel, handed out by ``Peer``
(peer.adapters.peer), and its ``Stream`` objects: asyncio views of the session's transport
(peer.transport), which decides everything. Each call here touches the transport, then
asks the owner to pump (send what became due, re-arm the timer); the owner feeds back the
transport's events, which wake whoever waits.

    conn = await me.connect("bob")
    await conn.send(b"a message")            # any size up to the transport's maximum
    stream = await conn.open_stream()        # ordered bytes, flow-controlled
    stream.write(data)
    await stream.drain()                     # waits while the peer's window is full
    stream.write_eof()
    reply = await stream.read()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from peer.errors import LocalProtocolError, PeerError
from peer.events import Connected, PathKind
from peer.transport import events as te
from peer.transport.connection import TransportConnection
from peer.transport.errors import StreamLimitError
from stunproto.attributes import Address

if TYPE_CHECKING:
    from peer.adapters.peer import Peer
    from peer.session import PeerSession


class Stream:
    """One bidirectional byte stream of a connection (like asyncio's StreamReader and
    StreamWriter in one)."""

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._finished = asyncio.Event()  # our side is acknowledged to its end, or reset
        self.stopped: int | None = None  # the peer asked us to stop sending (its code)
        self._reset_code: int | None = None  # the peer reset its side (its code)

    def write(self, data: bytes) -> None:
        transport = self._connection._live_transport()
        if self.stopped is not None:
            raise PeerError(
                f"stream {self.stream_id}: the peer stopped reading (code {self.stopped})"
            )
        transport.write(self.stream_id, data)
        self._connection._pump()

    async def drain(self) -> None:
        """Wait while the stream buffers its limit or more (the peer reads slower)."""
        while True:
            transport = self._connection._live_transport()
            if self.stopped is not None:
                raise PeerError(f"stream {self.stream_id}: the peer stopped reading")
            if transport.writable(self.stream_id):
                return
            self._writable.clear()
            await self._writable.wait()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all there are, if ``n`` < 0); b"" at the end of the stream."""
        while True:
            transport = self._connection._transport
            if transport.readable(self.stream_id):
                data = transport.read(self.stream_id, n)
                self._connection._pump()  # (a raised window may go out)
                return data
            if transport.at_eof(self.stream_id):
                # (The transport forgets a stream finished both ways, its reset code too:
                # the code the event told us is kept here.)
                code = transport.reset_code(self.stream_id)
                code = self._reset_code if code is None else code
                if code is not None:
                    raise PeerError(f"stream {self.stream_id} reset by the peer (code {code})")
                return b""
            self._connection._check_open()
            self._readable.clear()
            await self._readable.wait()

    async def readexactly(self, n: int) -> bytes:
        chunks: list[bytes] = []
        have = 0
        while have < n:
            chunk = await self.read(n - have)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(chunks), n)
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)

    def write_eof(self) -> None:
        self._connection._live_transport().write(self.stream_id, b"", end_stream=True)
        self._connection._pump()

    async def close(self) -> None:
        """End our side and wait until the peer has acknowledged all of it."""
        transport = self._connection._transport
        if not transport.sending_done(self.stream_id):
            self.write_eof()
        while not transport.sending_done(self.stream_id):
            self._connection._check_open()
            self._finished.clear()
            await self._finished.wait()

    def reset(self, code: int = 0) -> None:
        """Abandon the stream both ways (RESET_STREAM and STOP_SENDING)."""
        transport = self._connection._transport
        if not transport.sending_done(self.stream_id):
            transport.reset_stream(self.stream_id, code)
            if not transport.at_eof(self.stream_id):
                transport.stop_sending(self.stream_id, code)
            self._connection._pump()

    def limit_buffer(self, limit: int) -> None:
        """``drain`` waits from ``limit`` buffered bytes on (instead of the transport's
        send_buffer_limit): many streams at once each hold a small share."""
        self._connection._live_transport().limit_buffer(self.stream_id, limit)

    def stop_reading(self, code: int = 0) -> None:
        """Tell the peer to stop sending (STOP_SENDING); what we write still goes."""
        transport = self._connection._transport
        if self._connection.closed is None and not transport.at_eof(self.stream_id):
            transport.stop_sending(self.stream_id, code)
            self._connection._pump()

    def forget(self) -> None:
        """Done with the stream: the connection drops it (one that lives long carries many
        streams, a tunnel one per forwarded connection)."""
        self._connection._streams.pop(self.stream_id, None)

    def _wake(self) -> None:
        self._readable.set()
        self._writable.set()
        self._finished.set()


class Connection:
    """A secure channel to one peer. Iterate it for messages; ``send`` is reliable and
    ordered; streams and datagrams ride beside."""

    def __init__(self, owner: Peer, event: Connected, session: PeerSession) -> None:
        self._owner = owner
        self._session = session
        self._transport: TransportConnection = session.transport
        self.peer = event.peer
        self.path: PathKind = event.path
        self.remote: Address = event.remote
        self.connect_time = event.elapsed
        self.note = event.note
        self._messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._datagrams: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)
        self._incoming: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._streams: dict[int, Stream] = {}
        self._writable = asyncio.Event()  # the message stream's buffer has room again
        self._more_streams = asyncio.Event()
        self.closed: str | None = None  # the reason, once closed

    # ------------------------------------------------------------------ messages

    async def send(self, data: bytes) -> None:
        """Queue one message; waits while the messages already queued fill the buffer."""
        transport = self._live_transport()
        transport.send_message(data)
        self._pump()
        stream_id = transport.message_stream
        while not transport.writable(stream_id):
            self._check_open()
            self._writable.clear()
            await self._writable.wait()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the peer has acknowledged everything sent so far."""
        try:
            await asyncio.wait_for(self._until_acked(), timeout)
        except TimeoutError:
            raise PeerError(
                f"{self.peer} did not acknowledge everything within {timeout:g} s"
            ) from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    # ------------------------------------------------------------------ streams

    async def open_stream(self) -> Stream:
        while True:
            transport = self._live_transport()
            try:
                stream_id = transport.open_stream()
            except StreamLimitError:
                self._more_streams.clear()
                await self._more_streams.wait()
                continue
            stream = self._streams[stream_id] = Stream(self, stream_id)
            return stream

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened."""
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # for any other waiter
            raise PeerError(f"connection to {self.peer} closed: {self.closed}")
        return stream

    # ------------------------------------------------------------------ datagrams

    def send_datagram(self, data: bytes) -> None:
        """Unreliable: may be lost, never resent (at most about 1,100 bytes)."""
        self._live_transport().send_datagram(data)
        self._pump()

    async def recv_datagram(self) -> bytes:
        data = await self._datagrams.get()
        if data is None:
            self._datagrams.put_nowait(None)
            raise PeerError(f"connection to {self.peer} closed: {self.closed}")
        return data

    async def close(self, reason: str = "") -> None:
        """Hang up; ``reason`` (optional) is told to the peer (it ends its connection
        with ``closed by NAME: reason``)."""
        self._owner._agent_close(self.peer, reason)

    # ------------------------------------------------------------------ plumbing

    def _live_transport(self) -> TransportConnection:
        self._check_open()
        return self._transport

    def _check_open(self) -> None:
        if self.closed is not None:
            raise LocalProtocolError(f"connection to {self.peer} closed: {self.closed}")

    def _pump(self) -> None:
        self._owner._pump_later()

    async def _until_acked(self) -> None:
        while self.closed is None and self._session.pending:
            progress = self._owner._progress  # set on every pump
            progress.clear()
            await progress.wait()
        if self.closed is not None and self._session.pending:
            # Closed before everything was acknowledged: say so rather than pretend.
            raise PeerError(f"the connection closed before {self.peer} acknowledged everything")

    def _answer(self) -> None:
        """We take the connection the peer made: tell it at once (a ping, acknowledged at
        once; its ``connect()`` waits for that, peer.adapters.accept_queue)."""
        self._transport.ping()
        self._pump()

    def _answered(self) -> bool:
        """The peer acknowledged everything we sent that asks for it (our first packet,
        just after the handshake): it has taken the connection."""
        return self._transport.stalled_since is None

    def _deliver(self, data: bytes) -> None:
        self._messages.put_nowait(data)

    def _on_event(self, event: te.TransportEvent) -> None:
        kind = type(event)
        if kind is te.StreamReadable or kind is te.StreamReset:
            stream = self._streams.get(event.stream_id)  # type: ignore[union-attr]
            if stream is not None:
                if kind is te.StreamReset:
                    stream._reset_code = event.code  # type: ignore[union-attr]
                stream._readable.set()
        elif kind is te.StreamWritable:
            stream_id = event.stream_id  # type: ignore[union-attr]
            if stream_id == self._transport.message_stream:
                self._writable.set()
            elif (stream := self._streams.get(stream_id)) is not None:
                stream._writable.set()
        elif isinstance(event, te.StreamSent):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._finished.set()
        elif isinstance(event, te.StreamOpened):
            stream = self._streams[event.stream_id] = Stream(self, event.stream_id)
            self._incoming.put_nowait(stream)
        elif isinstance(event, te.StopSendingReceived):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream.stopped = event.code
                stream._wake()
        elif isinstance(event, te.DatagramReceived):
            if not self._datagrams.full():  # unreliable: a reader that lags loses some
                self._datagrams.put_nowait(event.data)
        elif isinstance(event, te.StreamsAvailable):
            self._more_streams.set()

    def _end(self, reason: str) -> None:
        self.closed = reason
        self._messages.put_nowait(None)  # ends the iteration after what is queued
        self._incoming.put_nowait(None)
        if self._datagrams.full():
            self._datagrams.get_nowait()
        self._datagrams.put_nowait(None)
        self._writable.set()
        self._more_streams.set()
        for stream in self._streams.values():
            stream._wake()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._messages.get()
            if item is None:
                return
            yield item
