"""Tunnels through the library API, on loopback with the real rendezvous: bob exposes
local services, alice forwards local ports to them (``Peer.expose``, ``Peer.forward``)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from natlab.services import rendezvous_process
from peer.adapters.accept_queue import ConnectionRefused
from peer.adapters.peer import Peer, PeerConfig
from peer.adapters.tunnel_forward import Forward
from peer.adapters.tunnel_pipe import TunnelRefusedError
from peer.identity import Identity
from peer.tunnel.events import TunnelClosed, TunnelEvent, TunnelOpened, TunnelRefused
from tests.support.loopback import free_port_pair

CONFIG = PeerConfig(probe_nat=False, keepalive=0)
E = TypeVar("E", TunnelOpened, TunnelClosed, TunnelRefused)


async def _digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads to the client's end, then answers with the SHA-256 and the byte count: the
    answer only comes if the half-close went through."""
    digest, total = hashlib.sha256(), 0
    while chunk := await reader.read(65536):
        digest.update(chunk)
        total += len(chunk)
    writer.write(digest.digest() + total.to_bytes(8, "big"))
    await writer.drain()
    writer.close()


async def _blob_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends N bytes (N, 8 bytes, is the request) of a fixed pseudo-random stream."""
    size = int.from_bytes(await reader.readexactly(8), "big")
    writer.write(random.Random(size).randbytes(size))
    await writer.drain()
    writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)


class Events(list[TunnelEvent]):
    """A side's tunnel events, and a way to wait for one (the tunnels end on their own
    time: a stream's end is acknowledged after the client has its answer)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def append(self, event: TunnelEvent) -> None:
        super().append(event)
        self._changed.set()

    async def until(self, predicate: Callable[[list[TunnelEvent]], bool]) -> None:
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self if isinstance(event, kind)]


@dataclass
class Lab:
    alice: Peer
    bob: Peer
    carol: Peer
    alice_events: Events = field(default_factory=Events)
    bob_events: Events = field(default_factory=Events)


@asynccontextmanager
async def tunnel_lab() -> AsyncIterator[Lab]:
    port = free_port_pair()
    digest = await asyncio.start_server(_digest_server, "127.0.0.1", 0)
    blob = await asyncio.start_server(_blob_server, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    closed = await asyncio.start_server(_digest_server, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()  # (a port nobody listens on: the target refuses)
    services = [
        f"digest=127.0.0.1:{digest.sockets[0].getsockname()[1]}",
        f"blob=127.0.0.1:{blob.sockets[0].getsockname()[1]}",
        f"echo=127.0.0.1:{udp.get_extra_info('sockname')[1]}/udp",
        f"gone=127.0.0.1:{closed_port}",
    ]
    try:
        with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
            server = ("127.0.0.1", port)
            async with (
                Peer(server, identity=Identity.generate(), name="alice", config=CONFIG) as a,
                Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as b,
                Peer(server, identity=Identity.generate(), name="carol", config=CONFIG) as c,
            ):
                lab = Lab(a, b, c)
                exposing = asyncio.ensure_future(
                    b.expose(services, allow=["alice"], on_event=lab.bob_events.append)
                )
                try:
                    yield lab
                finally:
                    exposing.cancel()
                    await asyncio.gather(exposing, return_exceptions=True)
    finally:
        for tcp in (digest, blob):
            tcp.close()
        udp.close()


@asynccontextmanager
async def forwarding(lab: Lab, target: str) -> AsyncIterator[Forward]:
    forward = await lab.alice.forward("0", target, on_event=lab.alice_events.append)
    try:
        yield forward
    finally:
        await forward.aclose()


async def _upload(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for at in range(0, len(payload), 1 << 20):
        writer.write(payload[at : at + (1 << 20)])
        await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


async def test_an_upload_and_a_download_go_through_a_forward_whole() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(60):
        async with forwarding(lab, "bob:digest") as up, forwarding(lab, "bob:blob") as down:
            payload = random.Random(7).randbytes(6 * 1024 * 1024 + 17)
            answer = await _upload(up.address[1], payload)
            assert answer == hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "big")

            size = 5 * 1024 * 1024 + 3
            reader, writer = await asyncio.open_connection("127.0.0.1", down.address[1])
            writer.write(size.to_bytes(8, "big"))
            data = await reader.read()
            writer.close()
            assert data == random.Random(size).randbytes(size)
            await lab.alice_events.until(lambda events: len(lab.alice_events.of(TunnelClosed)) == 2)
            await lab.bob_events.until(lambda events: len(lab.bob_events.of(TunnelClosed)) == 2)
        assert {e.service for e in lab.alice_events.of(TunnelOpened)} == {"digest", "blob"}
        by_service = {e.service: e for e in lab.alice_events.of(TunnelClosed)}
        assert by_service["digest"].sent == len(payload) and by_service["digest"].reason == ""
        assert by_service["blob"].received == size and by_service["blob"].sent == 8
        exposed = {e.service: e for e in lab.bob_events.of(TunnelClosed)}
        assert exposed["digest"].received == len(payload) and exposed["blob"].sent == size


async def test_many_concurrent_connections_all_complete_over_one_peer_connection() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(90):
        async with forwarding(lab, "bob:digest") as forward:
            payloads = [random.Random(i).randbytes(2000 + i) for i in range(300)]
            answers = await asyncio.gather(*(_upload(forward.address[1], p) for p in payloads))
        for payload, answer in zip(payloads, answers, strict=True):
            assert answer[:32] == hashlib.sha256(payload).digest()
        assert len(lab.alice.tunnel_links()._open) == 1


async def test_udp_requests_and_a_large_datagram_go_through_a_udp_forward() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(30), forwarding(lab, "bob:echo") as forward:
        assert forward.protocol.value == "udp"
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                answers.put_nowait(data)

        client, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", forward.address[1])
        )
        try:
            got = set()
            for i in range(5):
                client.sendto(b"ping %d" % i)
                got.add(await asyncio.wait_for(answers.get(), 10))
            assert got == {b"echo:ping %d" % i for i in range(5)}
            large = random.Random(3).randbytes(3000)  # more than a channel datagram
            client.sendto(large)
            assert await asyncio.wait_for(answers.get(), 10) == b"echo:" + large
        finally:
            client.close()


async def test_a_peer_not_allowed_is_refused_on_both_sides() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(30):
        with pytest.raises(ConnectionRefused, match="carol is not allowed"):
            await lab.carol.forward("0", "bob:digest")
        refused = lab.bob_events.of(TunnelRefused)
        assert [(e.peer, e.reason) for e in refused] == [("carol", "carol is not allowed here")]


async def test_an_unknown_service_is_refused_when_the_forward_starts() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(30):
        with pytest.raises(TunnelRefusedError, match="no service 'nope'"):
            await lab.alice.forward("0", "bob:nope")


async def test_a_target_that_refuses_is_a_refusal_on_both_sides_and_nothing_hangs() -> None:
    async with tunnel_lab() as lab, asyncio.timeout(30):
        async with forwarding(lab, "bob:gone") as forward:
            reader, writer = await asyncio.open_connection("127.0.0.1", forward.address[1])
            writer.write(b"hello")
            with pytest.raises(ConnectionResetError):
                await reader.read()
            writer.close()
            await lab.alice_events.until(lambda events: bool(lab.alice_events.of(TunnelRefused)))
        for events in (lab.alice_events, lab.bob_events):
            refused = events.of(TunnelRefused)
            assert len(refused) == 1 and "refused the connection" in refused[0].reason
