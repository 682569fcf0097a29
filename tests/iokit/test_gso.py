"""iokit.gso on loopback: GSO sends arrive as the separate datagrams they were, in order,
with or without GSO (IOKIT_UDP_GSO=0); runs are cut where sizes, destinations and the
kernel's limits say; a socket that refuses GSO falls back for good; GRO buffers are split
back into the datagrams that were sent."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from iokit import gso
from iokit.gso import (
    MAX_SEGMENTED_BYTES,
    MAX_SEGMENTS,
    GroReceiver,
    GsoSender,
    enable_gro,
    gso_supported,
    recv_gro,
    split_segments,
)

TIMEOUT = 2.0
FAMILIES = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def _patterned(count: int, size: int, salt: int = 0) -> list[bytes]:
    """Datagrams that differ from each other (index and salt in every byte)."""
    return [bytes((i + salt + k) % 251 for k in range(size)) for i in range(count)]


def _bound(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot bind {host}: {exc}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(TIMEOUT)
    return sock


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def _receive(sock: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` datagrams (socket.timeout after TIMEOUT without one)."""
    return [sock.recvfrom(MAX_SEGMENTED_BYTES + 1000)[0] for _ in range(count)]


def _assert_empty(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(70000)
    sock.settimeout(TIMEOUT)


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    gso.forget_probes()
    yield
    gso.forget_probes()


@pytest.fixture(params=["gso", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both send paths: with GSO (skipped where there is none) and IOKIT_UDP_GSO=0."""
    if request.param == "fallback":
        monkeypatch.setenv(gso.GSO_SWITCH, "0")
    else:
        monkeypatch.delenv(gso.GSO_SWITCH, raising=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            if not gso_supported(probe):
                pytest.skip("no UDP GSO here")
    mode: str = request.param
    return mode


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_batch_arrives_as_its_datagrams_in_order(mode: str, family: str) -> None:
    sender, receiver = _bound(*FAMILIES[family]), _bound(*FAMILIES[family])
    try:
        if mode == "gso" and not gso_supported(sender):
            pytest.skip(f"no UDP GSO over {family} here")
        datagrams = [*_patterned(40, 1200), *_patterned(1, 500, salt=7)]
        gso_sender = GsoSender()
        sent = gso_sender.send_batch(sender, datagrams, _address(receiver))
        assert sent == len(datagrams)
        assert _receive(receiver, len(datagrams)) == datagrams
        _assert_empty(receiver)
        stats = gso_sender.stats
        if mode == "gso":
            assert (stats.segmented_sends, stats.segmented_datagrams, stats.single_sends) == (
                1,
                41,
                0,
            )
        else:
            assert (stats.segmented_sends, stats.single_sends) == (0, 41)
    finally:
        sender.close()
        receiver.close()


def test_runs_break_at_destinations_sizes_and_the_kernel_limits(mode: str) -> None:
    sender, a, b = (_bound(*FAMILIES["ipv4"]) for _ in range(3))
    try:
        to_a, to_b = _address(a), _address(b)
        plan = [
            (to_a, _patterned(3, 1200) + _patterned(1, 700)),  # a run ending shorter
            (to_a, _patterned(2, 1200, salt=3)),  # a new run after the shorter one
            (to_b, _patterned(3, 500)),  # a new destination
            (to_a, [b"x" * 100, b""]),  # two singles: the empty one never segmented
            (to_b, [b"y" * 900, b"z" * 901]),  # longer after shorter: two singles
        ]
        items = [(data, address) for address, batch in plan for data in batch]
        gso_sender = GsoSender()
        assert gso_sender.send_many(sender, items) == len(items)
        for sock, address in ((a, to_a), (b, to_b)):
            expected = [data for data, to in items if to == address]
            assert _receive(sock, len(expected)) == expected
            _assert_empty(sock)
        stats = gso_sender.stats
        if mode == "gso":
            # [1200 x3 + 700] [1200 x2] [500 x3]; 100, "", 900 and 901 singly
            assert (stats.segmented_sends, stats.single_sends) == (3, 4)
            assert stats.segmented_datagrams == len(items) - 4
        else:
            assert (stats.segmented_sends, stats.single_sends) == (0, len(items))
    finally:
        for sock in (sender, a, b):
            sock.close()


@pytest.mark.parametrize(
    ("count", "size"),
    [(2 * MAX_SEGMENTS + 22, 100), (60, 1400)],  # by segments, by bytes
)
def test_long_runs_are_cut_at_the_segment_and_byte_limits(mode: str, count: int, size: int) -> None:
    sender, receiver = _bound(*FAMILIES["ipv4"]), _bound(*FAMILIES["ipv4"])
    try:
        datagrams = _patterned(count, size)
        gso_sender = GsoSender()
        assert gso_sender.send_batch(sender, datagrams, _address(receiver)) == count
        assert _receive(receiver, count) == datagrams
        per_send = min(MAX_SEGMENTS, MAX_SEGMENTED_BYTES // size)
        if mode == "gso":
            assert gso_sender.stats.segmented_sends == -(-count // per_send)
            assert gso_sender.stats.segmented_datagrams == count
    finally:
        sender.close()
        receiver.close()


class _RefusingSocket(socket.socket):
    """A socket whose segmented sends fail as a device without checksum offload fails."""

    sendmsg_calls = 0
    error = errno.EIO

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        self.sendmsg_calls += 1
        raise OSError(self.error, "refused")


def test_a_socket_that_refuses_gso_resends_singly_and_stops_trying() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        if not gso_supported(probe):
            pytest.skip("no UDP GSO here")  # else the refusal is never reached
    sender = _RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = _bound(*FAMILIES["ipv4"])
    try:
        sender.bind(("127.0.0.1", 0))
        datagrams = _patterned(10, 1200)
        gso_sender = GsoSender()
        assert gso_sender.segments(sender)
        for _ in range(2):
            assert gso_sender.send_batch(sender, datagrams, _address(receiver)) == 10
            assert _receive(receiver, 10) == datagrams
        assert sender.sendmsg_calls == 1 and not gso_sender.segments(sender)
        assert (gso_sender.stats.refusals, gso_sender.stats.single_sends) == (1, 20)
    finally:
        sender.close()
        receiver.close()


def test_a_full_buffer_drops_the_run_and_counts_it() -> None:
    class Full(_RefusingSocket):
        error = errno.EAGAIN

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        if not gso_supported(probe):
            pytest.skip("no UDP GSO here")
    sender = Full(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        gso_sender = GsoSender()
        datagrams = _patterned(5, 1200)
        assert gso_sender.send_batch(sender, datagrams, ("127.0.0.1", 9)) == 0
        assert gso_sender.stats.dropped == 5 and gso_sender.segments(sender)
    finally:
        sender.close()


def test_the_switch_turns_gso_and_gro_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gso.GSO_SWITCH, "0")
    monkeypatch.setenv(gso.GRO_SWITCH, "0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert not gso_supported(sock)
        assert not GsoSender().segments(sock)
        assert not enable_gro(sock)


def test_segments_split_without_copies() -> None:
    data = memoryview(bytearray(b"aaabbbc"))
    parts = split_segments(data, 3)
    assert [bytes(p) for p in parts] == [b"aaa", b"bbb", b"c"]
    assert all(p.obj is data.obj for p in parts)
    assert [bytes(p) for p in split_segments(data, 0)] == [b"aaabbbc"]  # no GRO size
    assert [bytes(p) for p in split_segments(data, 7)] == [b"aaabbbc"]
    assert [bytes(p) for p in split_segments(memoryview(b""), 3)] == [b""]


@pytest.fixture
def gro_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender, receiver = _bound(*FAMILIES["ipv4"]), _bound(*FAMILIES["ipv4"])
    try:
        if not enable_gro(receiver):
            pytest.skip("no UDP GRO here")
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def _read_split(receiver: GroReceiver, sock: socket.socket, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:  # socket.timeout after TIMEOUT without a buffer
        views, _ = receiver.receive(sock)
        got += [bytes(view) for view in views]
    return got


def test_gro_splits_what_a_gso_send_coalesced(gro_pair: tuple[socket.socket, ...]) -> None:
    sender, receiver_sock = gro_pair
    if not gso_supported(sender):
        pytest.skip("no UDP GSO here to make coalesced buffers with")
    datagrams = [*_patterned(40, 1200), *_patterned(1, 500, salt=9)]
    GsoSender().send_batch(sender, datagrams, _address(receiver_sock))
    receiver = GroReceiver()
    assert _read_split(receiver, receiver_sock, len(datagrams)) == datagrams
    _assert_empty(receiver_sock)
    assert receiver.stats.datagrams == len(datagrams)
    if receiver.stats.coalesced == 0:
        pytest.skip("the kernel delivered the GSO send uncoalesced: nothing to split")
    assert receiver.stats.buffers < len(datagrams)


def test_gro_reads_plain_datagrams_whether_or_not_coalesced(
    gro_pair: tuple[socket.socket, ...],
) -> None:
    sender, receiver_sock = gro_pair
    datagrams = _patterned(200, 1000)
    for data in datagrams:
        sender.sendto(data, _address(receiver_sock))
    receiver = GroReceiver()
    assert _read_split(receiver, receiver_sock, len(datagrams)) == datagrams
    _assert_empty(receiver_sock)
    if receiver.stats.coalesced == 0:
        pytest.skip("loopback did not coalesce separate sendto datagrams (it need not)")
    assert receiver.stats.buffers < len(datagrams)


def test_a_small_buffer_keeps_the_whole_segments_and_counts_the_cut(
    gro_pair: tuple[socket.socket, ...],
) -> None:
    sender, receiver_sock = gro_pair
    if not gso_supported(sender):
        pytest.skip("no UDP GSO here to make coalesced buffers with")
    datagrams = _patterned(10, 1200)
    GsoSender().send_batch(sender, datagrams, _address(receiver_sock))
    receiver = GroReceiver(buffer_size=3000)
    views, _ = receiver.receive(receiver_sock)
    if receiver.stats.coalesced == 0:
        pytest.skip("the kernel delivered the GSO send uncoalesced: nothing was cut")
    assert [bytes(v) for v in views] == datagrams[:2]
    assert receiver.stats.truncated == 1


def test_drain_and_recv_gro_hand_on_datagrams_with_their_source(
    gro_pair: tuple[socket.socket, ...],
) -> None:
    sender, receiver_sock = gro_pair
    datagrams = _patterned(30, 1200)
    GsoSender().send_batch(sender, datagrams, _address(receiver_sock))
    sender.sendto(b"last", _address(receiver_sock))
    first = recv_gro(receiver_sock)
    assert {source for _, source in first} == {_address(sender)}
    receiver_sock.setblocking(False)
    rest: list[tuple[bytes, tuple[str, int]]] = []
    handled = GroReceiver().drain(receiver_sock, lambda data, source: rest.append((data, source)))
    got = [data for data, _ in first + rest]
    assert got == [*datagrams, b"last"] and handled == len(rest)
    assert all(source == _address(sender) for _, source in rest)
