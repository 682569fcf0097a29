"""asyncio adapter: one TCP connection spliced onto one peer stream, both ways.

The TCP side's end (FIN) becomes the stream's end and the other way round, so a client
that half-closes (``shutdown(SHUT_WR)``, as ``nc -N`` or an HTTP/1.0 client does) still
reads its answer. A TCP reset becomes a stream reset, and a stream reset an RST on the
TCP side (SO_LINGER 0), so neither end mistakes an abort for a clean end. Bytes are
counted each way for the tunnel's closing line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from peer.adapters.accept_queue import ConnectionRefused
from peer.adapters.connection import Connection, Stream
from peer.errors import PeerError, PeerTimeout
from peer.tunnel.wire import LENGTH, OpenReply, OpenRequest, read_length

CHUNK = 256 * 1024
REPLY_TIMEOUT = 30.0  # the exposing side connects within its own timeout, then answers
OPEN_TIMEOUT = 10.0  # waiting for the peer to allow one more stream
# What one tunnelled connection may buffer toward the peer before its TCP side is read no
# further (the TCP window then pushes back on the client): enough for a megabyte of
# round trip in flight, and a thousand connections stalled at once hold a gigabyte at most
# rather than the transport's 4 MB each.
STREAM_BUFFER = 1024 * 1024
READ_LIMIT = 128 * 1024  # asyncio's StreamReader pauses the socket at twice this
RESET_TCP = 1  # the stream's reset code when the TCP side was reset
CLOSE_WAIT = 30.0  # how long the stream's end may take to be acknowledged, at most
_LINGER_RESET = struct.pack("ii", 1, 0)

log = structlog.get_logger()


class TunnelRefusedError(PeerError):
    """The peer refused the tunnel: not allowed, no such service, the target refused."""


@dataclass(slots=True)
class PipeResult:
    sent: int = 0  # TCP -> stream
    received: int = 0  # stream -> TCP
    problem: str = ""  # "" when both sides ended cleanly

    @property
    def counts(self) -> tuple[int, int]:
        return self.sent, self.received


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: Stream,
    result: PipeResult,
    *,
    initial: bytes = b"",
    gate: Awaitable[None] | None = None,
) -> PipeResult:
    """Carry bytes both ways until both ends are done (or one side aborts); ``initial``
    goes to the TCP side first (a header's leftover). Closes the TCP connection.

    With a ``gate`` (the forwarding side, awaiting the exposing side's reply), the TCP
    side's bytes already go, right behind the request: a new connection costs one round
    trip, not two. The stream's bytes reach the TCP side only once the gate passes; a
    gate that raises (a refusal) aborts both."""
    with contextlib.suppress(PeerError):
        stream.limit_buffer(STREAM_BUFFER)
    up = asyncio.ensure_future(_tcp_to_stream(reader, stream, result))
    down = asyncio.ensure_future(_stream_to_tcp(stream, writer, result, initial, gate))
    try:
        done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_EXCEPTION)
        refused = False
        for task in done:
            if (exc := task.exception()) is not None:
                result.problem = result.problem or _reason(exc)
                refused = refused or isinstance(exc, TunnelRefusedError)
        if result.problem:
            if not refused:  # (a refused client may read why: a SOCKS reply)
                abort_tcp(writer)
            stream.reset(RESET_TCP)
        else:
            with contextlib.suppress(PeerError, TimeoutError):
                await asyncio.wait_for(stream.close(), CLOSE_WAIT)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        writer.close()
        stream.forget()
    return result


async def _tcp_to_stream(reader: asyncio.StreamReader, stream: Stream, result: PipeResult) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            stream.write_eof()
            return
        stream.write(data)
        result.sent += len(data)
        await stream.drain()


async def _stream_to_tcp(
    stream: Stream,
    writer: asyncio.StreamWriter,
    result: PipeResult,
    initial: bytes,
    gate: Awaitable[None] | None,
) -> None:
    if gate is not None:
        await gate
    if initial:
        writer.write(initial)
        result.received += len(initial)
    while True:
        data = await stream.read(CHUNK)
        if not data:
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
            return
        writer.write(data)
        result.received += len(data)
        await writer.drain()


async def open_tunnel_stream(
    connection: Connection, request: OpenRequest
) -> tuple[Stream, Callable[[], asyncio.Future[OpenReply]]]:
    """A stream with the request written on it, and how to await the reply; PeerTimeout
    when the peer allows no more streams for OPEN_TIMEOUT (every slot held by a live
    connection), so that the client is refused rather than left hanging."""
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            stream = await connection.open_stream()
    except PeerError:
        raise_refusal(connection)
        raise
    except TimeoutError:
        raise PeerTimeout(
            f"{connection.peer} allows no more connections at once (no stream free within "
            f"{OPEN_TIMEOUT:g} s)"
        ) from None
    stream.write(request.encode())

    def reply() -> asyncio.Future[OpenReply]:
        return asyncio.ensure_future(_reply(stream))

    return stream, reply


def raise_refusal(connection: Connection) -> None:
    """A peer that refuses us closes the connection, and that close can overtake
    ``connect``'s answer (and the first stream or reply after it): if the peer closed it,
    raise ConnectionRefused with the peer's reason, as ``connect`` would have."""
    closed, prefix = connection.closed or "", f"closed by {connection.peer}: "
    if closed.startswith(prefix):
        raise ConnectionRefused(connection.peer, closed.removeprefix(prefix)) from None


async def _reply(stream: Stream) -> OpenReply:
    return OpenReply.parse(await read_header(stream, REPLY_TIMEOUT, "reply from the peer"))


async def read_header(stream: Stream, timeout: float, what: str) -> bytes:
    """The body of the length-prefixed header a tunnel stream starts with; PeerTimeout
    when it does not come in time, TunnelDecodeError when it is not one, PeerError when
    the stream ends first."""
    try:
        async with asyncio.timeout(timeout):
            prefix = await stream.readexactly(LENGTH.size)
            return await stream.readexactly(read_length(prefix))
    except TimeoutError:
        raise PeerTimeout(f"no {what} within {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise PeerError(f"the stream ended before the {what}") from None


def abort_tcp(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as the other side's reset asks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, PeerError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class TaskSet:
    """The tasks a tunnel runs, one per connection or stream: cancelled together when the
    tunnel stops; one that fails unexpectedly is logged and ends alone."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def __len__(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("tunnel_task_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
