"""iokit.udp_sockets: sockets by key, one reused buffer, batch reads, lossy sends.

Every test here runs on both read paths: recvmmsg/sendmmsg batches (where the platform has
them) and the recvfrom_into loop (IOKIT_UDP_MMSG=0); tests of the batched path's own logic
are in test_udp_sockets_batched.py.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from iokit.mmsg import ENVIRONMENT_SWITCH, load_calls
from iokit.udp_sockets import UdpSockets
from tests.iokit.udp_clients import answers, udp_client


@pytest.fixture(autouse=True, params=["batched", "recvfrom"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "batched" and load_calls(True) is None:
        pytest.skip("no recvmmsg/sendmmsg here")
    monkeypatch.setenv(ENVIRONMENT_SWITCH, "1" if request.param == "batched" else "0")
    return str(request.param)


def test_the_environment_switch_picks_the_read_path(read_path: str) -> None:
    assert UdpSockets(lambda *_: None).batched is (read_path == "batched")
    assert not UdpSockets(lambda *_: None, batched=False).batched


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


# ---------------------------------------------------------------- batches, both read paths


async def test_answers_reach_their_own_sources_when_some_datagrams_get_none() -> None:
    # Three clients interleaved in one batch; only every other datagram is answered, so the
    # batch's answers are not in the slots their requests were read into.
    def answer_odd(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes | None:
        return b"re:" + data if data[-1] % 2 else None

    sockets: UdpSockets[str] = UdpSockets(answer_odd)
    local = sockets.open("s", ("127.0.0.1", 0))
    clients = [udp_client() for _ in range(3)]
    try:
        for i in range(30):  # all queued before the loop runs: one wake-up sees them all
            clients[i % 3].sendto(bytes([i % 3, i]), local)
        for n, client in enumerate(clients):
            expected = [b"re:" + bytes([n, i]) for i in range(30) if i % 3 == n and i % 2]
            assert await answers(client, len(expected)) == expected
    finally:
        for client in clients:
            client.close()
        sockets.close_all()


async def test_the_largest_datagrams_pass_both_ways() -> None:
    biggest = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
    received, sockets = _collector()
    local = sockets.open("big", ("127.0.0.1", 0))
    echo = sockets.open("echo", ("127.0.0.1", 0), on_datagram=lambda k, d, s, n: d)
    client = udp_client()
    try:
        client.sendto(b"x" * biggest, local)
        client.sendto(b"y" * biggest, echo)
        client.sendto(b"", echo)  # handed on, but b"" is no answer: nothing is sent
        client.sendto(b"z", echo)
        assert await answers(client, 2) == [b"y" * biggest, b"z"]
        await _until(lambda: received)
        assert received[0][1] == b"x" * biggest
    finally:
        client.close()
        sockets.close_all()


async def test_ipv6_sources_are_host_and_port() -> None:
    received, sockets = _collector()
    try:
        local = sockets.open("v6", ("::1", 0))
        client = udp_client(socket.AF_INET6)
    except OSError:
        pytest.skip("::1 not configured")
    try:
        client.sendto(b"six", local)
        await _until(lambda: received)
        assert received[0][1:3] == (b"six", client.getsockname()[:2])
    finally:
        client.close()
        sockets.close_all()


async def test_a_handler_closing_its_socket_mid_batch_keeps_the_answers_before_it() -> None:
    sockets: UdpSockets[str]
    seen: list[bytes] = []
    after: list[bool] = []

    def handler(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
        seen.append(data)
        if data == b"close":
            sockets.close(key)
        return b"re:" + data

    sockets = UdpSockets(handler, after_batch=lambda key: after.append(key in sockets))
    local = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        for data in (b"1", b"2", b"close", b"3"):
            client.sendto(data, local)
        assert await answers(client, 2) == [b"re:1", b"re:2"]
        await _until(lambda: after)
        assert seen == [b"1", b"2", b"close"] and after == [False] and "s" not in sockets
        # Closed for real once the callback returned: the port is free again.
        assert sockets.open("again", local) == local
    finally:
        client.close()
        sockets.close_all()


async def test_a_raising_handler_loses_no_other_datagram_of_the_batch() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    batches: list[str] = []

    def handler(key: str, data: bytes, source: tuple[str, int], now: float) -> bytes:
        if data in (b"bad1", b"bad2"):
            raise ValueError(data.decode())
        return b"re:" + data

    sockets: UdpSockets[str] = UdpSockets(handler, after_batch=batches.append)
    local = sockets.open("s", ("127.0.0.1", 0))
    client = udp_client()
    try:
        for data in (b"1", b"bad1", b"2", b"bad2", b"3"):
            client.sendto(data, local)
        assert await answers(client, 3) == [b"re:1", b"re:2", b"re:3"]
        await _until(lambda: len(reported) == 2)
        # Each exception reaches the loop's handler, and after_batch ran for each wake-up.
        assert [str(exc) for exc in reported] == ["bad1", "bad2"]
        assert batches and set(batches) == {"s"}
    finally:
        loop.set_exception_handler(None)
        client.close()
        sockets.close_all()
