"""The data plane through the library API, two peers in one process on loopback with the
real rendezvous: many messages, a large message, streams with backpressure, datagrams."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from natlab.services import rendezvous_process
from peer.adapters.connection import Connection
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.identity import Identity
from tests.support.loopback import free_port_pair

CONFIG = PeerConfig(probe_nat=False, keepalive=0)


@asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[Connection, Connection]]:
    port = free_port_pair()
    with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
        server = ("127.0.0.1", port)
        async with (
            Peer(server, identity=Identity.generate(), name="alice", config=CONFIG) as alice,
            Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as bob,
        ):
            async with asyncio.timeout(20):
                to_bob = await alice.connect("bob")
                to_alice = await bob.accept()
            yield to_bob, to_alice


async def test_many_messages_and_a_large_one_arrive_in_order() -> None:
    async with connected_pair() as (to_bob, to_alice), asyncio.timeout(60):
        sent = [i.to_bytes(4, "big") + bytes(996) for i in range(20_000)]
        large = random.Random(1).randbytes(5 * 1024 * 1024)

        async def send() -> None:
            for message in sent:
                await to_bob.send(message)
            await to_bob.send(large)

        sender = asyncio.ensure_future(send())
        received = []
        async for message in to_alice:
            received.append(message)
            if len(received) == len(sent) + 1:
                break
        await sender
        assert received[:-1] == sent
        assert hashlib.sha256(received[-1]).digest() == hashlib.sha256(large).digest()


async def test_streams_move_bytes_both_ways_with_half_close() -> None:
    async with connected_pair() as (to_bob, to_alice), asyncio.timeout(60):
        payload = random.Random(2).randbytes(8 * 1024 * 1024)
        stream = await to_bob.open_stream()

        async def upload() -> None:
            for at in range(0, len(payload), 256 * 1024):
                stream.write(payload[at : at + 256 * 1024])
                await stream.drain()
            stream.write_eof()

        uploading = asyncio.ensure_future(upload())
        incoming = await to_alice.accept_stream()
        assert incoming.stream_id == stream.stream_id
        digest = hashlib.sha256()
        total = 0
        while chunk := await incoming.read(65536):
            digest.update(chunk)
            total += len(chunk)
        await uploading
        assert total == len(payload) and digest.digest() == hashlib.sha256(payload).digest()
        incoming.write(b"got it")
        await incoming.close()
        assert await stream.readexactly(6) == b"got it"
        assert await stream.read() == b""
        await stream.close()


async def test_a_reader_that_stops_holds_the_writer_back() -> None:
    async with connected_pair() as (to_bob, to_alice), asyncio.timeout(60):
        stream = await to_bob.open_stream()
        stream.write(b"x")
        incoming = await to_alice.accept_stream()
        written = 1
        chunk = bytes(256 * 1024)
        # Nobody reads on bob's side: the writer must come to wait, with at most the
        # receiver's window plus the sender's buffer written.
        while True:
            stream.write(chunk)
            written += len(chunk)
            try:
                await asyncio.wait_for(stream.drain(), 2.0)
            except TimeoutError:
                break
        limit = CONFIG.session.transport
        assert written <= limit.initial_max_stream_data + limit.send_buffer_limit + len(chunk)
        got = 0
        stream.write_eof()
        while data := await incoming.read():
            got += len(data)
        assert got == written


async def test_datagrams_and_a_closed_connection() -> None:
    async with connected_pair() as (to_bob, to_alice), asyncio.timeout(30):
        to_bob.send_datagram(b"quick")
        assert await to_alice.recv_datagram() == b"quick"
        await to_bob.close()
        with pytest.raises(PeerError, match="closed"):
            await to_alice.recv_datagram()
        assert to_alice.closed is not None and "closed by alice" in to_alice.closed
