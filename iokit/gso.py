"""UDP segmentation offload on Linux: many datagrams per ``sendmsg`` (GSO), many per
``recvmsg`` (GRO), through the socket module's ancillary data (no ctypes).

* GSO: a ``sendmsg`` with a ``(SOL_UDP, UDP_SEGMENT, gso_size)`` control message hands the
  kernel one buffer that it cuts into datagrams of ``gso_size`` bytes (the last one may be
  shorter). One system call and one pass through the stack for up to 64 datagrams: on
  loopback the sending side costs about what one ``sendto`` does. The receiver sees
  ordinary datagrams (the kernel segments before queueing to a socket without GRO), so
  nothing changes on the other side of the wire.
* GRO: with ``UDP_GRO`` set on a socket, the kernel may hand ``recvmsg`` several datagrams
  of one flow coalesced into one buffer, with a ``(SOL_UDP, UDP_GRO, segment_size)``
  control message; :class:`GroReceiver` cuts it back into the datagrams.

How the punching socket (``peer/adapters/punch_socket.py``) is meant to use it::

    sender = GsoSender()                          # one per socket set; cheap
    sender.send_batch(sock, packets, destination) # what one pump produced for one peer
    sender.send_many(sock, [(packet, destination), ...])   # mixed destinations

``send_batch`` sends runs of equal-sized datagrams (the last of a run may be shorter, at
most 64 of them and 65000 bytes) as one ``sendmsg`` each, anything else with ``sendto``.
Where GSO is missing (not Linux, an old kernel, ``IOKIT_UDP_GSO=0``) everything goes
through ``sendto``; where a socket's route refuses it (EIO: a device without checksum
offload; EINVAL: a segment larger than the device MTU) that socket falls back to ``sendto``
for good, the refused run resent datagram by datagram. As with ``UdpSockets.sendto``, what
the kernel will not take (a full buffer on a non-blocking socket, an unreachable
destination) is dropped, like any UDP loss, and counted in ``sender.stats``.

GRO changes what every reader of the socket sees: a coalesced buffer read by
``recvfrom``/``recvmmsg`` without control messages (``iokit.udp_sockets`` reads that way)
would be handed on as one long datagram. So call :func:`enable_gro` only on a socket that
is then read through a :class:`GroReceiver` alone (``receiver.drain(sock, on_datagram)``
in the socket's ``add_reader`` callback, instead of ``UdpSockets``'s reader). GSO on the
sending side needs nothing of the receiver and is safe on any socket.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

__all__ = [
    "GRO_SWITCH",
    "GSO_SWITCH",
    "MAX_SEGMENTED_BYTES",
    "MAX_SEGMENTS",
    "GroReceiver",
    "GroStats",
    "GsoSender",
    "GsoStats",
    "enable_gro",
    "forget_probes",
    "gso_supported",
    "recv_gro",
    "split_segments",
]

Address = tuple[str, int]
DataHandler = Callable[[bytes, Address], None]

# IOKIT_UDP_GSO=0 / IOKIT_UDP_GRO=0 force the one-datagram-per-call paths (tests,
# benchmarks, a kernel or NIC suspected of mangling offloaded datagrams).
GSO_SWITCH = "IOKIT_UDP_GSO"
GRO_SWITCH = "IOKIT_UDP_GRO"
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h; the socket module has no name for either
UDP_GRO = 104
# Kernels before 6.2 take at most 64 segments per send (later ones 128): the older bound.
MAX_SEGMENTS = 64
# Below the largest UDP payload over IPv4 (65507), with room for what a kernel adds.
MAX_SEGMENTED_BYTES = 65000
MAX_DATAGRAM = 65535
# What a route or device answers when it cannot segment (see the module doc); EMSGSIZE
# and the option errors for kernels that do not know UDP_SEGMENT at all.
_REFUSALS = frozenset(
    {errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
# Room for the UDP_GRO int and whatever other control message a caller enabled.
_ANCILLARY_SIZE = socket.CMSG_SPACE(4) + 64 if hasattr(socket, "CMSG_SPACE") else 0
# A plain int: the IntFlag's own ``&`` costs about a microsecond, per datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)
_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}

log = structlog.get_logger()


def _switched_off(variable: str) -> bool:
    return os.environ.get(variable, "1") == "0"


def _linux_ancillary() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket.socket, "sendmsg")


def gso_supported(sock: socket.socket) -> bool:
    """Whether ``sock``'s family can send with UDP_SEGMENT here: False with
    ``IOKIT_UDP_GSO=0``; else a probe on a loopback socket of that family (run once per
    family, see :func:`forget_probes`). A device may still refuse: ``GsoSender`` copes."""
    if _switched_off(GSO_SWITCH) or sock.type != socket.SOCK_DGRAM:
        return False
    return _probe(sock.family)


@functools.cache
def _probe(family: socket.AddressFamily) -> bool:
    """Two one-byte segments to ourselves on loopback must arrive as two datagrams."""
    if not _linux_ancillary() or family not in _LOOPBACK:
        return False
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((_LOOPBACK[family], 0))
            probe.getsockopt(SOL_UDP, UDP_SEGMENT)  # ENOPROTOOPT before Linux 4.18
            probe.settimeout(1.0)
            here = probe.getsockname()[:2]
            probe.sendmsg([b"ab"], [(SOL_UDP, UDP_SEGMENT, _segment_size(1))], 0, here)
            return probe.recv(4) == b"a" and probe.recv(4) == b"b"
    except OSError:  # no ::1, no UDP_SEGMENT, a kernel that did not split: not here
        return False


def forget_probes() -> None:
    """Probe again on the next :func:`gso_supported` (tests that flip the switch)."""
    _probe.cache_clear()


@functools.lru_cache(maxsize=256)
def _segment_size(size: int) -> bytes:
    return size.to_bytes(2, sys.byteorder)  # the kernel reads a native __u16


@dataclass(slots=True)
class GsoStats:
    """What a :class:`GsoSender` did: segmented sends and the datagrams in them, single
    ``sendto`` calls, datagrams the kernel would not take, sockets that refused GSO."""

    segmented_sends: int = 0
    segmented_datagrams: int = 0
    single_sends: int = 0
    dropped: int = 0
    refusals: int = 0


class GsoSender:
    """Sends batches of datagrams with as few system calls as GSO allows (module doc).
    Remembers, per socket, whether that socket may segment; holds no socket alive."""

    def __init__(self) -> None:
        self.stats = GsoStats()
        self._segmenting: weakref.WeakKeyDictionary[socket.socket, bool] = (
            weakref.WeakKeyDictionary()
        )

    def segments(self, sock: socket.socket) -> bool:
        """Whether batches from ``sock`` go out segmented (False once it refused)."""
        segmenting = self._segmenting.get(sock)
        if segmenting is None:
            segmenting = self._segmenting[sock] = gso_supported(sock)
        return segmenting

    def send_many(self, sock: socket.socket, items: Iterable[tuple[bytes, Address]]) -> int:
        """Send ``(datagram, destination)`` pairs in order, each run of consecutive ones to
        the same destination as one :meth:`send_batch`; returns how many the kernel took."""
        sent = 0
        run: list[bytes] = []
        destination: Address | None = None
        for data, address in items:
            if address != destination:
                if run and destination is not None:
                    sent += self.send_batch(sock, run, destination)
                run, destination = [], address
            run.append(data)
        if run and destination is not None:
            sent += self.send_batch(sock, run, destination)
        return sent

    def send_batch(self, sock: socket.socket, datagrams: Sequence[bytes], address: Address) -> int:
        """Send ``datagrams`` in order to ``address``; returns how many the kernel took (the
        rest were dropped: UDP loss, counted in ``stats.dropped``)."""
        count = len(datagrams)
        if count == 0:
            return 0
        if count == 1 or not self.segments(sock):
            return self._send_singly(sock, datagrams, 0, count, address)
        stats, sent, start = self.stats, 0, 0
        while start < count:
            end = _run_end(datagrams, start, count)
            size = len(datagrams[start])
            if end - start == 1:
                sent += self._send_singly(sock, datagrams, start, end, address)
                start = end
                continue
            control = [(SOL_UDP, UDP_SEGMENT, _segment_size(size))]
            try:
                sock.sendmsg(datagrams[start:end], control, 0, address)
            except OSError as exc:
                if exc.errno in _REFUSALS:
                    # This socket's route cannot segment: the rest goes out datagram by
                    # datagram, now and from now on (see the module doc).
                    self._segmenting[sock] = False
                    stats.refusals += 1
                    log.warning("udp_gso_refused", error=str(exc), address=address)
                    return sent + self._send_singly(sock, datagrams, start, count, address)
                stats.dropped += end - start  # a full buffer, an unreachable destination
            else:
                sent += end - start
                stats.segmented_sends += 1
                stats.segmented_datagrams += end - start
            start = end
        return sent

    def _send_singly(
        self,
        sock: socket.socket,
        datagrams: Sequence[bytes],
        start: int,
        end: int,
        address: Address,
    ) -> int:
        send, sent = sock.sendto, 0
        for index in range(start, end):
            try:
                send(datagrams[index], address)
            except OSError:  # a full buffer or an ICMP error: loss, like UdpSockets.sendto
                continue
            sent += 1
        self.stats.single_sends += end - start
        self.stats.dropped += end - start - sent
        return sent


def _run_end(datagrams: Sequence[bytes], start: int, count: int) -> int:
    """The end of the segmentable run at ``start``: datagrams of the first one's size, the
    last of them possibly shorter, within MAX_SEGMENTS and MAX_SEGMENTED_BYTES."""
    size = len(datagrams[start])
    if size == 0:
        return start + 1  # a zero gso_size means "not segmented" to the kernel
    limit = min(count, start + MAX_SEGMENTS, start + MAX_SEGMENTED_BYTES // size)
    end = start + 1
    while end < limit:
        length = len(datagrams[end])
        if length > size or length == 0:  # an empty datagram is no segment of a stream
            break
        end += 1
        if length < size:
            break  # a shorter one can only be the last segment
    return end


def enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel to coalesce ``sock``'s incoming datagrams (UDP_GRO); True if it
    agreed. False with ``IOKIT_UDP_GRO=0``, off Linux, or on a kernel without UDP_GRO
    (before 5.0). Read the socket through a :class:`GroReceiver` only (module doc)."""
    if _switched_off(GRO_SWITCH) or not _linux_ancillary() or sock.type != socket.SOCK_DGRAM:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def split_segments(view: memoryview, segment_size: int) -> list[memoryview]:
    """``view`` cut into ``segment_size`` pieces (the last may be shorter), no copies."""
    if segment_size <= 0 or segment_size >= len(view):
        return [view]
    return [view[at : at + segment_size] for at in range(0, len(view), segment_size)]


@dataclass(slots=True)
class GroStats:
    """What a :class:`GroReceiver` read: buffers, the datagrams in them, buffers that held
    more than one, and datagrams lost to a too-small buffer (cut, so dropped)."""

    buffers: int = 0
    datagrams: int = 0
    coalesced: int = 0
    truncated: int = 0


class GroReceiver:
    """Reads a (GRO-enabled or plain) UDP socket into one reused buffer and splits what the
    kernel coalesced. ``buffer_size`` below 65535 loses what does not fit (counted)."""

    def __init__(self, buffer_size: int = MAX_DATAGRAM) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._buffer = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._buffers = [self._buffer]
        self.stats = GroStats()

    def receive(self, sock: socket.socket) -> tuple[list[memoryview], Address]:
        """One ``recvmsg``: the datagrams it read, as views into the receive buffer (valid
        until the next call), and their source. Raises what ``recvmsg`` raises
        (BlockingIOError on an empty non-blocking socket, TimeoutError, ...)."""
        size, ancillary, flags, source = sock.recvmsg_into(self._buffers, _ANCILLARY_SIZE)
        stats = self.stats
        stats.buffers += 1
        if len(source) != 2:
            source = (source[0], source[1])  # IPv6 sources have four fields
        if not ancillary and not flags:  # one plain datagram: the common case, kept short
            stats.datagrams += 1
            return [self._view[:size]], source
        segment = 0
        for level, kind, data in ancillary:
            if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
                segment = int.from_bytes(data[:4], sys.byteorder)
        if flags & _MSG_TRUNC:
            stats.truncated += 1
            if segment <= 0 or segment > size:
                return [], source  # one datagram, longer than the buffer: never handed on cut
            # Segments wholly inside the buffer are whole datagrams; the rest is lost (the
            # kernel does not say how many: counted as one).
            size -= size % segment
        datagrams = split_segments(self._view[:size], segment)
        stats.datagrams += len(datagrams)
        if len(datagrams) > 1:
            stats.coalesced += 1
        return datagrams, source

    def drain(self, sock: socket.socket, on_datagram: DataHandler, budget: int = 64) -> int:
        """Read a non-blocking ``sock`` until it is empty or ``budget`` datagrams were
        handed to ``on_datagram(data, source)`` (bytes of their own); returns how many.
        The socket's read callback: a read error (a queued ICMP report) ends the round."""
        handled = 0
        while handled < budget:
            try:
                datagrams, source = self.receive(sock)
            except OSError:  # BlockingIOError: drained; anything else: the next wake-up
                break
            for data in datagrams:
                on_datagram(bytes(data), source)
            handled += len(datagrams)
        return handled


def recv_gro(sock: socket.socket, bufsize: int = MAX_DATAGRAM) -> list[tuple[bytes, Address]]:
    """One ``recvmsg`` on ``sock``, split into ``(datagram, source)`` pairs (copies); for
    occasional reads. Loops should keep a :class:`GroReceiver` and its buffer."""
    datagrams, source = GroReceiver(bufsize).receive(sock)
    return [(bytes(data), source) for data in datagrams]
