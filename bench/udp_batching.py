#!/usr/bin/env python3
"""UDP system-call batching on loopback: sendto vs sendmmsg vs GSO, recvfrom vs recvmmsg vs
GRO, side by side in one run.

    python bench/udp_batching.py                      # 200k x 1200 B per mode, 3 rounds
    python bench/udp_batching.py --count 1000000 --burst 128 --ipv6
    python bench/udp_batching.py --modes sendto/recvfrom,gso/gro --quick

One process, one thread, two sockets on 127.0.0.1 (or ::1): the sender sends a burst of
``--burst`` datagrams of ``--size`` bytes (what one pump of the peer produces for one peer),
then the receiver reads them all back, copying each datagram out as bytes as the peer's
reader does; repeated until ``--count`` datagrams went through. Alternating keeps the
receive queue short, so nothing is dropped and each side's cost is measured on its own:
the CPU time (user + system, of this thread) spent in each phase, and the wall time of the
whole. On loopback the kernel delivers in the sender's system call, so the send side also
carries the receive path of the stack (unless the kernel accounts softirq time apart).

Send paths:   sendto    one ``socket.sendto`` per datagram
              sendmmsg  ``sendmmsg(2)`` through ctypes (``iokit.mmsg.load_calls``), the
                        datagrams copied into reused memory, one call per burst
              gso       ``iokit.gso.GsoSender``: one ``sendmsg`` with UDP_SEGMENT per run
                        of up to 54 datagrams of 1200 B (64 segments, 65000 bytes)
Receive paths: recvfrom  ``recvfrom_into`` into one reused buffer, per datagram
              recvmmsg  ``iokit.mmsg.MmsgArena`` (rounds of 32, what ``UdpSockets`` runs)
              gro       ``iokit.gso.GroReceiver`` on a socket with UDP_GRO: one
                        ``recvmsg`` per coalesced buffer, split by its segment size
The rounds interleave the modes (each once per round); the table shows medians.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iokit.gso import GroReceiver, GsoSender, enable_gro, gso_supported
from iokit.mmsg import IoVec, MmsgArena, MmsgCalls, MMsgHdr, load_calls

SENDERS = ("sendto", "sendmmsg", "gso")
RECEIVERS = ("recvfrom", "recvmmsg", "gro")
DEFAULT_MODES = (
    "sendto/recvfrom",
    "sendmmsg/recvmmsg",
    "gso/recvfrom",
    "gso/recvmmsg",
    "gso/gro",
    "sendto/gro",
)
BUFFER_BYTES = 4 * 1024 * 1024
WAIT_S = 1.0  # a burst not complete this long after it was sent: counted as lost

Address = tuple[str, int]
Send = Callable[[list[bytes]], None]
Receive = Callable[[int], int]  # reads up to n datagrams, returns how many (0: none yet)


def _sockaddr(family: socket.AddressFamily, address: Address) -> bytes:
    head = int(family).to_bytes(2, sys.byteorder) + address[1].to_bytes(2, "big")
    packed = socket.inet_pton(family, address[0])
    if family == socket.AF_INET6:
        return head + bytes(4) + packed + bytes(4)
    return head + packed + bytes(8)


class MmsgSender:
    """``sendmmsg`` of up to ``slots`` datagrams to one destination from reused memory:
    headers, iovecs and buffers built once, a datagram costs a copy and a length."""

    def __init__(self, calls: MmsgCalls, slots: int, size_max: int, name: bytes) -> None:
        self._sendmmsg, self.slots = calls.sendmmsg, slots
        hdr, iov = ctypes.sizeof(MMsgHdr), ctypes.sizeof(IoVec)
        self._hdr = hdr
        self._iovs, names = slots * hdr, slots * (hdr + iov)
        self._buffers = -(-(names + len(name)) // 64) * 64
        self._stride = size_max
        self._map = mmap.mmap(-1, self._buffers + slots * size_max)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._map[names : names + len(name)] = name
        for i in range(slots):
            header = MMsgHdr.from_buffer(self._map, i * hdr)
            header.msg_hdr.msg_name = self._base + names
            header.msg_hdr.msg_namelen = len(name)
            header.msg_hdr.msg_iov = self._base + self._iovs + i * iov
            header.msg_hdr.msg_iovlen = 1
            vector = IoVec.from_buffer(self._map, self._iovs + i * iov)
            vector.iov_base = self._base + self._buffers + i * size_max
        self._u64 = memoryview(self._map).cast("Q")

    def send(self, fd: int, datagrams: list[bytes]) -> None:
        mm, u64, stride, buffers = self._map, self._u64, self._stride, self._buffers
        length0 = (self._iovs + IoVec.iov_len.offset) // 8
        for start in range(0, len(datagrams), self.slots):
            chunk = datagrams[start : start + self.slots]
            for i, data in enumerate(chunk):
                at = buffers + i * stride
                mm[at : at + len(data)] = data
                u64[length0 + 2 * i] = len(data)
            sent = 0
            while sent < len(chunk):
                done = self._sendmmsg(fd, self._base + sent * self._hdr, len(chunk) - sent, 0)
                if done < 0:
                    raise OSError(ctypes.get_errno(), "sendmmsg failed")
                sent += done


def _grow(sock: socket.socket) -> None:
    for option, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
        try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE (root): past net.core.[rw]mem_max
            sock.setsockopt(socket.SOL_SOCKET, forced, BUFFER_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)


def _sender(kind: str, sock: socket.socket, to: Address, burst: int, size: int) -> Send:
    if kind == "sendto":
        sendto = sock.sendto

        def send(datagrams: list[bytes]) -> None:
            for data in datagrams:
                sendto(data, to)

        return send
    if kind == "sendmmsg":
        calls = load_calls(True)
        assert calls is not None
        mmsg = MmsgSender(calls, min(burst, 1024), size, _sockaddr(sock.family, to))
        fd = sock.fileno()
        return lambda datagrams: mmsg.send(fd, datagrams)
    gso = GsoSender()

    def send_gso(datagrams: list[bytes]) -> None:
        gso.send_batch(sock, datagrams, to)

    return send_gso


def _receiver(kind: str, sock: socket.socket, size: int, sink: list[int]) -> Receive:
    """``sink`` collects [datagrams, bytes, wrong sizes, receive calls that returned data]."""
    if kind == "recvfrom":
        buffer = bytearray(65535)
        view, receive = memoryview(buffer), sock.recvfrom_into

        def read(wanted: int) -> int:
            got = 0
            while got < wanted:
                try:
                    n, _ = receive(buffer)
                except BlockingIOError:
                    break
                data = bytes(view[:n])
                sink[1] += len(data)
                sink[2] += len(data) != size
                got += 1
            sink[0] += got
            sink[3] += got
            return got

        return read
    if kind == "recvmmsg":
        calls = load_calls(True)
        assert calls is not None
        recvmmsg = calls.recvmmsg

        def counted(fd: int, msgs: int, vlen: int, flags: int, timeout: None) -> int:
            count = recvmmsg(fd, msgs, vlen, flags, timeout)
            sink[3] += count > 0
            return count

        counting = MmsgCalls(counted, calls.sendmmsg)
        arena: MmsgArena[str] = MmsgArena(counting, slots=32, buffer_size=65535)
        errors: list[Exception] = []

        def handler(key: str, data: bytes, source: Address, now: float) -> None:
            sink[0] += 1
            sink[1] += len(data)
            sink[2] += len(data) != size

        def read_mmsg(wanted: int) -> int:
            before = sink[0]
            arena.serve("r", sock, handler, 0.0, wanted, errors)
            return sink[0] - before

        return read_mmsg
    gro = GroReceiver()

    def read_gro(wanted: int) -> int:
        got = 0
        while got < wanted:
            try:
                views, _ = gro.receive(sock)
            except BlockingIOError:
                break
            for view in views:
                data = bytes(view)
                sink[1] += len(data)
                sink[2] += len(data) != size
            got += len(views)
            sink[3] += 1
        sink[0] += got
        return got

    return read_gro


@dataclass
class Result:
    wall: list[float] = field(default_factory=list)
    send_cpu: list[float] = field(default_factory=list)
    recv_cpu: list[float] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    coalesced: list[float] = field(default_factory=list)


def run_mode(
    mode: str, args: argparse.Namespace, family: socket.AddressFamily
) -> tuple[float, ...]:
    """One run: (wall s, send CPU s, receive CPU s, datagrams lost, per receive call)."""
    send_kind, recv_kind = mode.split("/")
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    tx, rx = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
    try:
        for sock in (tx, rx):
            sock.bind((host, 0))
            _grow(sock)
        rx.setblocking(False)
        if recv_kind == "gro" and not enable_gro(rx):
            raise RuntimeError("UDP_GRO refused")
        to = rx.getsockname()[:2]
        # Distinct contents per slot of a burst, built once (the bench measures I/O).
        pool = [bytes([i % 256]) * args.size for i in range(args.burst)]
        sink = [0, 0, 0, 0]
        send = _sender(send_kind, tx, to, args.burst, args.size)
        receive = _receiver(recv_kind, rx, args.size, sink)
        clock = time.thread_time
        send_cpu = recv_cpu = 0.0
        lost, done = 0, 0
        label = f"{mode:18}"
        started = time.perf_counter()
        while done < args.count:
            burst = pool[: min(args.burst, args.count - done)]
            t0 = clock()
            send(burst)
            t1 = clock()
            got = 0
            while got < len(burst):
                n = receive(len(burst) - got)
                if n:
                    got += n
                elif not select.select([rx], [], [], WAIT_S)[0]:
                    lost += len(burst) - got
                    break
            recv_cpu += clock() - t1
            send_cpu += t1 - t0
            done += len(burst)
            if done % (args.count // 10 or 1) < len(burst):
                print(f"\r  {label} {done * 100 // args.count:3d}%", end="", file=sys.stderr)
        wall = time.perf_counter() - started
        if sink[2]:
            raise RuntimeError(f"{mode}: {sink[2]} datagrams of the wrong size")
        if sink[0] + lost != args.count:
            raise RuntimeError(f"{mode}: {sink[0]} received + {lost} lost != {args.count}")
        return wall, send_cpu, recv_cpu, lost, sink[0] / max(sink[3], 1)
    finally:
        tx.close()
        rx.close()


def available(mode: str, family: socket.AddressFamily) -> str | None:
    """Why ``mode`` cannot run here, or None."""
    send_kind, recv_kind = mode.split("/")
    if "mmsg" in mode and load_calls(True) is None:
        return "no recvmmsg/sendmmsg"
    if send_kind == "gso":
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            if not gso_supported(probe):
                return "no UDP GSO (or IOKIT_UDP_GSO=0)"
    if recv_kind == "gro":
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            if not enable_gro(probe):
                return "no UDP GRO (or IOKIT_UDP_GRO=0)"
    return None


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for mode in modes:
        send_kind, _, recv_kind = mode.partition("/")
        if send_kind not in SENDERS or recv_kind not in RECEIVERS:
            raise argparse.ArgumentTypeError(
                f"bad mode {mode!r}: SEND/RECEIVE with SEND in {', '.join(SENDERS)} and "
                f"RECEIVE in {', '.join(RECEIVERS)}"
            )
    return modes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=_positive, default=200_000, help="datagrams per mode")
    parser.add_argument("--size", type=_positive, default=1200, help="bytes per datagram")
    parser.add_argument("--burst", type=_positive, default=64, help="datagrams per send round")
    parser.add_argument("--runs", type=_positive, default=3, help="rounds (median shown)")
    parser.add_argument("--modes", type=_modes, default=list(DEFAULT_MODES),
                        help=f"SEND/RECEIVE,... (default {','.join(DEFAULT_MODES)})")  # fmt: skip
    parser.add_argument("--ipv6", action="store_true", help="over ::1 instead of 127.0.0.1")
    parser.add_argument("--quick", action="store_true", help="20k datagrams, one round")
    args = parser.parse_args()
    if args.size > 65000:
        parser.error("--size: at most 65000 bytes")
    if args.quick:
        args.count, args.runs = min(args.count, 20_000), 1
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET

    modes = []
    for mode in args.modes:
        reason = available(mode, family)
        if reason:
            print(f"skipping {mode}: {reason}", file=sys.stderr)
        else:
            modes.append(mode)
    results = {mode: Result() for mode in modes}
    for round_no in range(args.runs):
        for mode in modes:
            wall, send_cpu, recv_cpu, lost, per_read = run_mode(mode, args, family)
            r = results[mode]
            r.wall.append(wall)
            r.send_cpu.append(send_cpu)
            r.recv_cpu.append(recv_cpu)
            r.lost.append(int(lost))
            r.coalesced.append(per_read)
            print(
                f"\r  round {round_no + 1}: {mode:18} {args.count / wall:10,.0f} datagrams/s"
                f"  send {send_cpu:.2f} s  receive {recv_cpu:.2f} s CPU",
                file=sys.stderr,
            )

    gigabytes = args.count * args.size / 1e9
    print(
        f"\nUDP over {'::1' if args.ipv6 else '127.0.0.1'}: {args.count:,} datagrams of "
        f"{args.size} B per mode, bursts of {args.burst}, median of {args.runs}, pid {os.getpid()}"
    )
    print(
        f"{'send/receive':20}{'datagrams/s':>13}{'MB/s':>9}{'CPU-s/GB':>10}{'send':>8}"
        f"{'receive':>9}{'per call':>10}{'lost':>6}"
    )
    for mode, r in results.items():
        wall = statistics.median(r.wall)
        send_cpu, recv_cpu = statistics.median(r.send_cpu), statistics.median(r.recv_cpu)
        cpu = statistics.median(s + v for s, v in zip(r.send_cpu, r.recv_cpu, strict=True))
        print(
            f"{mode:20}{args.count / wall:13,.0f}{gigabytes * 1e3 / wall:9,.0f}"
            f"{cpu / gigabytes:10.2f}{send_cpu / gigabytes:8.2f}{recv_cpu / gigabytes:9.2f}"
            f"{statistics.median(r.coalesced):10.1f}{max(r.lost):6}"
        )
    print("CPU-s/GB: this thread's user + system time per GB moved (send + receive phases);")
    print("per call: datagrams per receive system call that returned data (GRO: per buffer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
