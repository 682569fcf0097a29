"""A set of plain non-blocking UDP sockets, read through ``loop.add_reader``.

Why not ``loop.create_datagram_endpoint``:

* it is a coroutine, but a socket must often be usable in the same callback that decided to
  open it (a TURN relay socket right after the Allocate that asked for it: a Send
  indication may be right behind it; a peer's extra punching socket right before the first
  probe leaves it);
* plain asyncio's selector datagram transport calls ``recvfrom(256 KiB)`` for every
  datagram, so every datagram costs a fresh 256 KiB buffer (and, depending on glibc's heap
  state, a map and trim of it). Here every socket of the set is read into reused memory,
  and each wake-up reads a batch, so a busy socket costs one selector round per batch, not
  per datagram, and a burst on one socket cannot starve the others for long;
* on Linux a batch is read with ``recvmmsg`` and its answers sent with one ``sendmmsg``
  (``iokit.mmsg``): two system calls per round of up to 32 datagrams instead of two per
  datagram. Elsewhere, or with ``batched=False`` / ``IOKIT_UDP_MMSG=0``, each datagram is
  read with ``recvfrom_into`` into ONE reused buffer and its answer sent with ``sendto``.

::

    sockets = UdpSockets(on_datagram)            # on_datagram(key, data, source, now)
    bound = sockets.open("relay-1", ("0.0.0.0", 0))   # raises OSError when it cannot bind
    sockets.sendto("relay-1", data, destination)       # OSError swallowed: UDP is lossy
    sockets.close("relay-1")
    sockets.close_all()

``now`` is ``loop.time()`` read once per wake-up; ``after_batch(key)`` (optional) runs once
after each wake-up's batch, the place to flush what the datagrams caused and re-arm timers.
Keys are anything hashable the owner likes (an index, a typed route, a relay address).

A handler may return bytes: the answer, sent from the same socket back to the datagram's
source (a server's hot path: no lookup, no queue) before the next read and before
``after_batch``. ``open(..., on_datagram=h)`` gives one socket a handler of its own instead
of the set's. A handler may close its own socket: the datagrams behind it are dropped with
it (the answers before it still go out; on the batched path the descriptor itself closes
when the callback returns). An exception from a handler propagates out of the wake-up, after
the datagrams already read are handled, their answers sent and ``after_batch`` ran; later
exceptions of the same wake-up go to the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Generic

from iokit.mmsg import Address, DatagramHandler, KeyT, MmsgArena, MmsgUnavailable, load_calls

__all__ = ["DEFAULT_BATCH", "MAX_DATAGRAM", "Address", "DatagramHandler", "UdpSockets"]

# Datagrams read per wake-up of one socket: enough to amortise the selector round, small
# enough that the other sockets (and timers) get their turn during a flood.
DEFAULT_BATCH = 64
MAX_DATAGRAM = 65535
# Datagrams per recvmmsg round (a wake-up reads up to ``batch`` of them, in rounds).
MMSG_SLOTS = 32


class UdpSockets(Generic[KeyT]):
    """Non-blocking UDP sockets by key, sharing one receive buffer; see the module doc."""

    def __init__(
        self,
        on_datagram: DatagramHandler[KeyT] | None = None,
        *,
        after_batch: Callable[[KeyT], None] | None = None,
        batch: int = DEFAULT_BATCH,
        buffer_size: int = MAX_DATAGRAM,
        batched: bool | None = None,
    ) -> None:
        """``batched``: False reads with ``recvfrom_into``; True or None (the default) with
        ``recvmmsg`` where it exists, None unless ``IOKIT_UDP_MMSG=0`` says otherwise."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._on_datagram = on_datagram
        self._after_batch = after_batch
        self._batch = batch
        self._buffer_size = buffer_size
        self._calls = load_calls(batched)
        # Created on the first batched read (``_arena_for_reading``), shared by every socket.
        self._arena: MmsgArena[KeyT] | None = None
        # One buffer for every socket (the recvfrom_into path): a callback runs to completion
        # before the next read, and each datagram is copied out (bytes of its own length)
        # before it is handed on.
        self._buffer = bytearray(buffer_size if self._calls is None else 0)
        self._view = memoryview(self._buffer)
        self._sockets: dict[KeyT, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def batched(self) -> bool:
        """Whether new reads go through recvmmsg/sendmmsg (False after an ENOSYS too)."""
        return self._calls is not None

    # ------------------------------------------------------------------ sockets

    def open(
        self,
        key: KeyT,
        local: Address = ("0.0.0.0", 0),
        *,
        on_datagram: DatagramHandler[KeyT] | None = None,
    ) -> Address:
        """Bind a new socket under ``key`` and start reading it (with ``on_datagram``, else
        the set's handler); returns the bound address. Raises OSError (out of descriptors,
        address in use, ...) with nothing left open, and ValueError if ``key`` is taken or
        there is no handler."""
        if key in self._sockets:
            raise ValueError(f"a socket is already open under {key!r}")
        handler = on_datagram or self._on_datagram
        if handler is None:
            raise ValueError("no on_datagram handler, for the set or for this socket")
        loop = self._loop = self._loop or asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(local)
            if self._calls is None:
                loop.add_reader(sock.fileno(), self._readable, key, sock, handler, family)
            else:
                loop.add_reader(sock.fileno(), self._readable_batched, key, sock, handler)
        except BaseException:
            sock.close()
            raise
        self._sockets[key] = sock
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    def close(self, key: KeyT) -> None:
        """Stop reading and close the socket under ``key`` (nothing if there is none)."""
        sock = self._sockets.pop(key, None)
        if sock is not None:
            self._forget(sock)

    def close_all(self) -> None:
        for sock in self._sockets.values():
            self._forget(sock)
        self._sockets.clear()

    def _forget(self, sock: socket.socket) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        if self._arena is not None and self._arena.reading is sock:
            # A handler closes the socket being read: the arena sends the answers queued
            # before this one, then closes it (its descriptor must not be reused meanwhile).
            self._arena.reading = None
            return
        sock.close()

    def __contains__(self, key: object) -> bool:
        return key in self._sockets

    def __len__(self) -> int:
        return len(self._sockets)

    def __iter__(self) -> Iterator[KeyT]:
        return iter(list(self._sockets))

    def get_socket(self, key: KeyT) -> socket.socket:
        """The socket under ``key`` (KeyError if there is none), for socket options."""
        return self._sockets[key]

    def local_address(self, key: KeyT) -> Address:
        """The bound address of the socket under ``key`` (KeyError if there is none)."""
        host, port = self._sockets[key].getsockname()[:2]
        return str(host), int(port)

    # ------------------------------------------------------------------ data

    def sendto(self, key: KeyT, data: bytes, destination: Address) -> bool:
        """Send from the socket under ``key``. False, and nothing raised, when there is no
        such socket or the kernel refused (a full buffer, an unreachable destination): for
        UDP that is loss like any other, and the sender's own retransmissions deal with it."""
        sock = self._sockets.get(key)
        if sock is None:
            return False
        # A bare try costs less than contextlib.suppress on this per-datagram path.
        try:
            sock.sendto(data, destination)
        except OSError:
            return False
        return True

    def _readable_batched(
        self, key: KeyT, sock: socket.socket, handler: DatagramHandler[KeyT]
    ) -> None:
        loop = self._loop
        assert loop is not None  # set by open(), the only way a reader is registered
        errors: list[Exception] = []
        try:
            arena = self._arena
            if arena is None:
                if self._calls is None:
                    raise MmsgUnavailable  # another socket of the set met ENOSYS
                slots = min(self._batch, MMSG_SLOTS)
                arena = MmsgArena(self._calls, slots=slots, buffer_size=self._buffer_size)
                self._arena = arena
            arena.serve(key, sock, handler, loop.time(), self._batch, errors)
            if errors:
                for later in errors[1:]:  # after the first, which is raised now
                    context = {"message": "Exception in a UDP datagram handler", "exception": later}
                    loop.call_soon(loop.call_exception_handler, context)
                raise errors[0]
        except MmsgUnavailable:
            # No recvmmsg in this kernel (ENOSYS): the set reads with recvfrom_into from now
            # on, every socket switching at its next wake-up as this one does here.
            self._calls = self._arena = None
            if len(self._buffer) == 0:
                self._buffer = bytearray(self._buffer_size)
                self._view = memoryview(self._buffer)
            loop.add_reader(sock.fileno(), self._readable, key, sock, handler, sock.family)
        finally:
            if self._after_batch is not None:
                self._after_batch(key)

    def _readable(
        self,
        key: KeyT,
        sock: socket.socket,
        handler: DatagramHandler[KeyT],
        family: socket.AddressFamily,
    ) -> None:
        loop = self._loop
        assert loop is not None  # set by open(), the only way a reader is registered
        now = loop.time()
        buffer, view, receive, send = self._buffer, self._view, sock.recvfrom_into, sock.sendto
        # IPv4 source addresses are (host, port) already; IPv6 ones have 4 fields.
        ipv6 = family == socket.AF_INET6
        try:
            for _ in range(self._batch):
                try:
                    size, source = receive(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # e.g. a queued ICMP error report; the next wake-up reads on
                if ipv6:
                    source = (source[0], source[1])
                # (Should the handler close this very socket, the next read fails: OSError.)
                answer = handler(key, bytes(view[:size]), source, now)
                if answer:
                    try:  # noqa: SIM105 (cheaper than contextlib.suppress per datagram)
                        send(answer, source)
                    except OSError:
                        pass
        finally:
            if self._after_batch is not None:
                self._after_batch(key)
