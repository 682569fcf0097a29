"""iokit.udp_sockets: sockets by key, one reused buffer, batch reads, lossy sends."""

from __future__ import annotations

import asyncio
import socket

import pytest

from iokit.udp_sockets import UdpSockets

Received = list[tuple[str, bytes, tuple[str, int], float]]


def _collector() -> tuple[Received, UdpSockets[str]]:
    received: Received = []
    sockets: UdpSockets[str] = UdpSockets(
        lambda key, data, source, now: received.append((key, data, source, now))
    )
    return received, sockets


async def _until(condition: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def test_open_send_receive_and_close() -> None:
    received, sockets = _collector()
    a = sockets.open("a", ("127.0.0.1", 0))
    b = sockets.open("b", ("127.0.0.1", 0))
    assert a[0] == "127.0.0.1" and a[1] > 0 and sockets.local_address("a") == a
    assert "a" in sockets and len(sockets) == 2 and sorted(sockets) == ["a", "b"]
    assert sockets.sendto("a", b"hello", b)
    assert sockets.sendto("b", b"hi", a)
    await _until(lambda: len(received) == 2)
    by_key = {key: (data, source) for key, data, source, _ in received}
    assert by_key == {"b": (b"hello", a), "a": (b"hi", b)}
    assert all(now <= asyncio.get_running_loop().time() for *_, now in received)
    sockets.close("a")
    assert "a" not in sockets
    assert not sockets.sendto("a", b"gone", b)  # no such socket: dropped, no error
    sockets.close("a")  # twice is harmless
    sockets.close_all()
    assert len(sockets) == 0


async def test_each_datagram_is_its_own_bytes_despite_the_shared_buffer() -> None:
    received, sockets = _collector()
    local = sockets.open("x", ("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        for payload in (b"a" * 1000, b"bb", b"", b"c" * 1500):
            sender.sendto(payload, local)
        await _until(lambda: len(received) == 4)
        source = sender.getsockname()
    assert [data for _, data, _, _ in received] == [b"a" * 1000, b"bb", b"", b"c" * 1500]
    assert all(type(data) is bytes and src == source for _, data, src, _ in received)
    sockets.close_all()


async def test_batches_are_bounded_and_after_batch_runs_per_wakeup() -> None:
    seen: list[bytes] = []
    batches: list[tuple[str, int]] = []
    sockets: UdpSockets[str] = UdpSockets(
        lambda key, data, source, now: seen.append(data),
        after_batch=lambda key: batches.append((key, len(seen))),
        batch=4,
    )
    local = sockets.open("s", ("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(10):
            sender.sendto(bytes([i]), local)
        await _until(lambda: len(seen) == 10)
    assert seen == [bytes([i]) for i in range(10)]
    # No wake-up read more than the batch, and every one ended with after_batch.
    counts = [n for _, n in batches]
    assert counts[-1] == 10 and all(b - a <= 4 for a, b in zip([0, *counts], counts, strict=False))
    assert {key for key, _ in batches} == {"s"}
    sockets.close_all()


async def test_handler_may_close_its_own_socket() -> None:
    sockets: UdpSockets[str]
    seen: list[bytes] = []

    def handler(key: str, data: bytes, source: tuple[str, int], now: float) -> None:
        seen.append(data)
        sockets.close(key)

    sockets = UdpSockets(handler)
    local = sockets.open("s", ("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"1", local)
        sender.sendto(b"2", local)
        await _until(lambda: seen)
        await asyncio.sleep(0.01)
    assert seen == [b"1"] and "s" not in sockets


async def test_open_failures_leave_nothing_open() -> None:
    _, sockets = _collector()
    taken = sockets.open("a", ("127.0.0.1", 0))
    with pytest.raises(OSError):
        sockets.open("b", taken)  # address in use
    assert "b" not in sockets
    with pytest.raises(ValueError):
        sockets.open("a", ("127.0.0.1", 0))  # key in use
    with pytest.raises(ValueError):
        UdpSockets(lambda *_: None, batch=0)
    sockets.close_all()


async def test_send_errors_are_swallowed() -> None:
    _, sockets = _collector()
    sockets.open("a", ("127.0.0.1", 0))
    # An IPv4 socket cannot reach an IPv6 destination: the kernel refuses, we drop.
    assert not sockets.sendto("a", b"x", ("::1", 9))
    sockets.close_all()


async def test_ipv6_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    received, sockets = _collector()
    try:
        local = sockets.open("v6", ("::1", 0))
    except OSError:
        pytest.skip("::1 not configured")
    assert sockets.sendto("v6", b"six", local)
    await _until(lambda: received)
    assert received[0][1:3] == (b"six", local)
    sockets.close_all()


async def test_per_socket_handlers_and_answers_sent_straight_back() -> None:
    seen: list[tuple[str, bytes]] = []

    def echo(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
        seen.append((key, data))
        return b"re:" + data

    sockets: UdpSockets[str] = UdpSockets()  # no set-wide handler: each socket brings one
    with pytest.raises(ValueError):
        sockets.open("none", ("127.0.0.1", 0))
    assert "none" not in sockets
    local = sockets.open("echo", ("127.0.0.1", 0), on_datagram=echo)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.sendto(b"ping", local)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, client.recv, 100)
    assert answer == b"re:ping" and seen == [("echo", b"ping")]
    sockets.close_all()
