"""iokit.mmsg and the batched read path of iokit.udp_sockets: rounds of recvmmsg, one
sendmmsg per round (partial and refused sends), truncation, the ENOSYS fallback. What both
read paths share is tested in test_udp_sockets.py."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import socket

import pytest

from iokit import udp_sockets
from iokit.mmsg import MmsgCalls, decode_source, load_calls
from iokit.udp_sockets import MMSG_SLOTS, UdpSockets
from tests.iokit.udp_clients import answers, udp_client

CALLS = load_calls(True)
pytestmark = pytest.mark.skipif(CALLS is None, reason="no recvmmsg/sendmmsg here")


def _echo(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
    return b"re:" + data


def test_sources_decode_as_the_socket_module_gives_them() -> None:
    v4 = socket.AF_INET.to_bytes(2, "little") + (3478).to_bytes(2, "big")
    assert decode_source(v4 + bytes([192, 0, 2, 7]) + bytes(8)) == ("192.0.2.7", 3478)
    v6 = socket.AF_INET6.to_bytes(2, "little") + (9).to_bytes(2, "big") + bytes(4)
    packed = socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    assert decode_source(v6 + packed + bytes(4)) == ("2001:db8::5", 9)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.1")
    assert decode_source(v6 + mapped + bytes(4)) == ("::ffff:192.0.2.1", 9)


async def test_a_wakeup_reads_its_batch_in_rounds_and_answers_every_round() -> None:
    sizes: list[int] = []
    seen: list[bytes] = []

    def handler(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
        seen.append(data)
        return b"re:" + data

    batch = MMSG_SLOTS * 2 + 5  # three rounds: two full ones and a short one
    sockets: UdpSockets[str] = UdpSockets(
        handler, after_batch=lambda key: sizes.append(len(seen)), batch=batch
    )
    assert sockets.batched
    local = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        total = batch + 10  # more than one wake-up may read
        for i in range(total):
            client.sendto(i.to_bytes(2, "big"), local)
        received = await answers(client, total)
        assert received == [b"re:" + i.to_bytes(2, "big") for i in range(total)]
        assert sizes[0] == batch and sizes[-1] == total  # the first wake-up read its budget
    finally:
        client.close()
        sockets.close_all()


def _calls_with_send(sendmmsg: object) -> MmsgCalls:
    assert CALLS is not None
    return MmsgCalls(CALLS.recvmmsg, sendmmsg)  # type: ignore[arg-type]


async def test_partial_sends_are_resumed_and_refused_ones_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CALLS is not None
    real = CALLS.sendmmsg
    calls: list[int] = []

    def one_at_a_time_refusing_the_second(fd: int, msgs: int, vlen: int, flags: int) -> int:
        calls.append(vlen)
        if len(calls) == 2:
            ctypes.set_errno(errno.EAGAIN)
            return -1  # the kernel refused the first of what was left
        return int(real(fd, msgs, 1, flags))  # a partial send: one of vlen

    fake = _calls_with_send(one_at_a_time_refusing_the_second)
    monkeypatch.setattr(udp_sockets, "load_calls", lambda wanted: fake)
    sockets: UdpSockets[str] = UdpSockets(_echo)
    local = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        for data in (b"1", b"2", b"3", b"4"):
            client.sendto(data, local)
        assert await answers(client, 3) == [b"re:1", b"re:3", b"re:4"]
        assert calls == [4, 3, 2, 1]
    finally:
        client.close()
        sockets.close_all()


async def test_datagrams_longer_than_the_buffer_are_dropped_not_cut() -> None:
    seen: list[bytes] = []
    sockets: UdpSockets[str] = UdpSockets(
        lambda key, data, source, now: seen.append(data), buffer_size=100
    )
    local = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        for data in (b"a" * 100, b"b" * 101, b"c"):
            client.sendto(data, local)
        async with asyncio.timeout(2):
            while len(seen) < 2:
                await asyncio.sleep(0.001)
        assert seen == [b"a" * 100, b"c"]
    finally:
        client.close()
        sockets.close_all()


async def test_a_handler_may_reopen_the_key_it_closed_mid_batch() -> None:
    sockets: UdpSockets[str]
    new: list[tuple[str, int]] = []

    def handler(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
        if key == "s" and not new:
            sockets.close("s")
            new.append(sockets.open("s", ("127.0.0.1", 0), on_datagram=_echo))
        return b"old:" + data

    sockets = UdpSockets(handler)
    old = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        client.sendto(b"1", old)
        client.sendto(b"2", old)
        async with asyncio.timeout(2):
            while not new:
                await asyncio.sleep(0.001)
        # The new socket (maybe on the old one's descriptor number) answers for itself; the
        # old one's queued datagram went with it.
        client.sendto(b"3", new[0])
        assert await answers(client, 1) == [b"re:3"]
    finally:
        client.close()
        sockets.close_all()


async def test_a_kernel_without_recvmmsg_falls_back_to_recvfrom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CALLS is not None

    def no_such_call(fd: int, msgs: int, vlen: int, flags: int, timeout: None) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    fake = MmsgCalls(no_such_call, CALLS.sendmmsg)
    monkeypatch.setattr(udp_sockets, "load_calls", lambda wanted: fake)
    sockets: UdpSockets[str] = UdpSockets(_echo)
    assert sockets.batched
    a = sockets.open("a", ("127.0.0.1", 0))
    b = sockets.open("b", ("127.0.0.1", 0))
    client = udp_client()
    try:
        client.sendto(b"1", a)
        assert await answers(client, 1) == [b"re:1"]
        assert not sockets.batched
        client.sendto(b"2", b)  # the other socket switches at its next wake-up
        client.sendto(b"3", a)
        assert sorted(await answers(client, 2)) == [b"re:2", b"re:3"]
    finally:
        client.close()
        sockets.close_all()
