"""Batched UDP system calls on Linux: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

Python's socket module reads and sends one datagram per system call. A STUN server's hot
path is little more than that: on loopback the two calls per request cost more than the
Python work between them. ``MmsgArena`` reads up to ``slots`` datagrams per ``recvmmsg`` and
sends the answers of a round with one ``sendmmsg``, from pre-allocated, reused memory:

* ``recvmmsg`` headers (``struct mmsghdr``), one ``iovec`` and one receive buffer per slot,
  and a ``sockaddr_in6``-sized source address per slot;
* ``sendmmsg`` headers whose ``msg_name`` points at the source address the request came
  from and whose ``iovec`` is the request's own (the datagram has been copied out as bytes
  by then, so its buffer is free for the answer): nothing is built per answer but a length.

Every header is rewritten from one template before each ``recvmmsg`` (144 bytes a slot, one
copy), so what the kernel wrote back (name lengths, flags) or the last round pointed
elsewhere never carries over. The memory is an anonymous ``mmap``: 32 slots of 64 KiB are
2 MiB of address space, but only the pages datagrams were written to cost memory. A buffer
holds any UDP datagram (65535 bytes); with a smaller ``buffer_size`` a longer datagram is
dropped (MSG_TRUNC), never handed on cut.

``load_calls()`` is None where this is not available (not Linux, not a 64-bit ABI, a libc
without ``recvmmsg``), or when ``IOKIT_UDP_MMSG=0`` asks for the plain path; a kernel
without the calls (ENOSYS) raises ``MmsgUnavailable`` on first use. ``iokit.udp_sockets``
falls back to ``recvfrom_into`` then.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import socket
import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Address = tuple[str, int]
KeyT = TypeVar("KeyT", bound=Hashable)
DatagramHandler = Callable[[KeyT, bytes, Address, float], "bytes | None"]

# IOKIT_UDP_MMSG=0 forces the one-call-per-datagram path (tests, benchmarks, a suspect libc).
ENVIRONMENT_SWITCH = "IOKIT_UDP_MMSG"
_NAME_SIZE = 32  # sizeof(struct sockaddr_in6) is 28; 32 keeps the slots aligned
_PAGE = mmap.PAGESIZE
# Source addresses decoded once: raw sockaddr bytes -> (host, port), bounded (a spoofed flood
# only makes it start over).
_SOURCE_CACHE_MAX = 4096


class MmsgUnavailable(Exception):
    """The kernel has no recvmmsg/sendmmsg (ENOSYS): use the one-call-per-datagram path."""


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def _offset(structure: type[ctypes.Structure], name: str) -> int:
    return int(getattr(structure, name).offset)


_HDR = ctypes.sizeof(MMsgHdr)
_IOV = ctypes.sizeof(IoVec)
_MSG_NAME = _offset(MsgHdr, "msg_name")
_MSG_IOV = _offset(MsgHdr, "msg_iov")
_MSG_FLAGS = _offset(MsgHdr, "msg_flags")
_MSG_LEN = _offset(MMsgHdr, "msg_len")
_IOV_LEN = _offset(IoVec, "iov_len")


@dataclass(frozen=True, slots=True)
class MmsgCalls:
    """libc's ``recvmmsg(fd, msgs, vlen, flags, timeout)`` and ``sendmmsg(fd, msgs, vlen,
    flags)``, addresses as ints; -1 and ``ctypes.get_errno()`` on error."""

    recvmmsg: Callable[[int, int, int, int, None], int]
    sendmmsg: Callable[[int, int, int, int], int]


@functools.cache
def _libc_calls() -> MmsgCalls | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None  # the header layout below is the LP64 one
    if _HDR != 64 or _IOV != 16:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv: Any = libc.recvmmsg
        send: Any = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    c_int, c_uint, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
    recv.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
    recv.restype = c_int
    send.argtypes = [c_int, c_void_p, c_uint, c_int]
    send.restype = c_int
    return MmsgCalls(recv, send)


def load_calls(wanted: bool | None = None) -> MmsgCalls | None:
    """The batched calls, or None where there are none or they are not wanted: ``wanted``
    False, or None (the default) with ``IOKIT_UDP_MMSG=0`` in the environment."""
    if wanted is None:
        wanted = os.environ.get(ENVIRONMENT_SWITCH, "1") != "0"
    return _libc_calls() if wanted else None


def decode_source(name: bytes) -> Address:
    """(host, port) of a raw ``sockaddr_in`` / ``sockaddr_in6``, as ``recvfrom`` gives them
    (IPv6 without flow info and scope: the sockets' callers see (host, port) only)."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, name[8:24]), port
    return socket.inet_ntop(socket.AF_INET, name[4:8]), port


class MmsgArena(Generic[KeyT]):
    """Reusable ``recvmmsg``/``sendmmsg`` memory for ``slots`` datagrams of up to
    ``buffer_size`` bytes; ``serve`` runs one socket's wake-up. One arena serves every
    socket of a set: a callback runs to completion before the next one reads."""

    def __init__(self, calls: MmsgCalls, *, slots: int, buffer_size: int) -> None:
        self._recvmmsg, self._sendmmsg = calls.recvmmsg, calls.sendmmsg
        self.slots = slots
        self._buffer_size = buffer_size
        self._stride = -(-buffer_size // _PAGE) * _PAGE or _PAGE
        recv_iovs = slots * _HDR
        send_hdrs = recv_iovs + slots * _IOV
        names = send_hdrs + slots * _HDR
        buffers = -(-(names + slots * _NAME_SIZE) // _PAGE) * _PAGE
        self._map = mmap.mmap(-1, buffers + slots * self._stride)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        for i in range(slots):
            recv, iov, send = i * _HDR, recv_iovs + i * _IOV, send_hdrs + i * _HDR
            header = MMsgHdr.from_buffer(self._map, recv)
            header.msg_hdr.msg_name = base + names + i * _NAME_SIZE
            header.msg_hdr.msg_namelen = 28  # sizeof(struct sockaddr_in6); enough for v4
            header.msg_hdr.msg_iov = base + iov
            header.msg_hdr.msg_iovlen = 1
            ctypes.memmove(base + send, base + recv, _HDR)  # same name and iovec
            vector = IoVec.from_buffer(self._map, iov)
            vector.iov_base = base + buffers + i * self._stride
            vector.iov_len = buffer_size
        self._template = self._map[:names]
        self._recv_address, self._send_address = base, base + send_hdrs
        self._names, self._buffers = names, buffers
        self._send_hdrs, self._recv_iovs = send_hdrs, recv_iovs
        self._u32 = memoryview(self._map).cast("I")
        self._u64 = memoryview(self._map).cast("Q")
        self._base = base
        self._sources: dict[bytes, Address] = {}
        # The socket being served: ``UdpSockets`` sets it to None when a handler closes that
        # socket, and the arena closes it once the round's answers are out.
        self.reading: socket.socket | None = None

    def serve(
        self,
        key: KeyT,
        sock: socket.socket,
        handler: DatagramHandler[KeyT],
        now: float,
        budget: int,
        errors: list[Exception],
    ) -> None:
        """Read up to ``budget`` datagrams from ``sock`` in rounds of ``slots``, hand each to
        ``handler`` and send its answer back to its source, one ``sendmmsg`` per round. An
        exception from a handler goes to ``errors`` and the round goes on (its datagrams are
        out of the kernel already); the caller raises it after the wake-up."""
        fd = sock.fileno()
        mm, u32, u64, template, tlen = (
            self._map,
            self._u32,
            self._u64,
            self._template,
            len(self._template),
        )
        recvmmsg, slots, recv_address = self._recvmmsg, self.slots, self._recv_address
        size_max, stride, buffers, names = (
            self._buffer_size,
            self._stride,
            self._buffers,
            self._names,
        )
        length0, flags0 = _MSG_LEN // 4, _MSG_FLAGS // 4
        iov_len0 = (self._recv_iovs + _IOV_LEN) // 8
        name0, iov0 = (self._send_hdrs + _MSG_NAME) // 8, (self._send_hdrs + _MSG_IOV) // 8
        name_base, iov_base = self._base + names, self._base + self._recv_iovs
        sources, truncated = self._sources, socket.MSG_TRUNC
        # The source address's length: sockaddr_in or sockaddr_in6 (the cache's key).
        name_size = 16 if sock.family == socket.AF_INET else 28
        queued = 0
        self.reading = sock
        try:
            while budget > 0:
                vlen = slots if budget > slots else budget
                mm[:tlen] = template
                count = recvmmsg(fd, recv_address, vlen, socket.MSG_DONTWAIT, None)
                if count <= 0:
                    if count < 0 and ctypes.get_errno() == errno.ENOSYS:
                        raise MmsgUnavailable
                    # EAGAIN: drained. Anything else (a queued error report): the next
                    # wake-up reads on, as the recvfrom loop does.
                    return
                budget -= count
                for i in range(count):
                    size = u32[length0 + 16 * i]
                    if size == size_max and u32[flags0 + 16 * i] & truncated:
                        continue  # longer than the buffer: dropped, never handed on cut
                    at = names + i * _NAME_SIZE
                    name = mm[at : at + name_size]
                    source = sources.get(name)
                    if source is None:
                        if len(sources) >= _SOURCE_CACHE_MAX:
                            sources.clear()
                        source = sources[name] = decode_source(name)
                    at = buffers + i * stride
                    try:
                        answer = handler(key, mm[at : at + size], source, now)
                    except Exception as exc:  # raised by the caller, after the round
                        errors.append(exc)
                        answer = None
                    if self.reading is not sock:
                        return  # the handler closed this socket: its answer goes nowhere
                    if answer:
                        size = len(answer)
                        if size > size_max:
                            continue  # no UDP datagram is that long: sendto would fail
                        mm[at : at + size] = answer
                        u64[iov_len0 + 2 * i] = size
                        if queued != i:  # an earlier datagram had no answer: point at ours
                            u64[name0 + 8 * queued] = name_base + i * _NAME_SIZE
                            u64[iov0 + 8 * queued] = iov_base + i * _IOV
                        queued += 1
                if queued:
                    self._send(fd, queued)
                    queued = 0
                if count < vlen:
                    return
        finally:
            if queued:
                self._send(fd, queued)
            if self.reading is not sock:
                sock.close()  # closed by a handler: now that its round is out
            self.reading = None

    def _send(self, fd: int, count: int) -> None:
        """``sendmmsg`` the first ``count`` answers; what the kernel refuses (a full buffer,
        an unreachable destination) is dropped, like any other UDP loss."""
        sendmmsg, address, sent = self._sendmmsg, self._send_address, 0
        while sent < count:
            done = sendmmsg(fd, address + sent * _HDR, count - sent, socket.MSG_DONTWAIT)
            sent += done if done > 0 else 1  # -1: the first one failed; skip just that one
