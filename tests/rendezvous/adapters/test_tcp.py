"""The rendezvous over TCP on loopback: STUN Binding, login and introductions, TURN with the
relay's peer side on UDP, and the listener's bounds (garbage, idle, too many connections).

The sans-I/O clients are driven over a TCP connection by ``TcpDriver``: their datagrams
are framed onto the stream, decoded frames go back into ``receive_datagram``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest

from peer.events import Allocated, ChannelBound, DataReceived, Introduced, LoggedIn
from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from peer.turn_client import TurnClient, TurnClientConfig
from rendezvous.adapters.server import RendezvousServer
from rendezvous.adapters.tcp import TcpConfig
from rendezvous.binding import StunServiceConfig
from rendezvous.turn_auth import rest_credentials
from rendezvous.turn_config import TurnConfig
from stunproto import AttrType, MessageClass, Method, StunMessage
from stunproto.attributes import Address
from stunproto.framing import StreamDecoder, frame
from stunproto.message import new_transaction_id

HOST = "127.0.0.1"
PEER_HOST = "127.0.0.2"  # the UDP peer the relay talks to
SECRET = b"tcp test secret"
REALM = "tcp.test"
TIMEOUT = 5.0


def free_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` (bound and released)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


@asynccontextmanager
async def serving(
    *, relay: bool = False, tcp: TcpConfig | None = None
) -> AsyncIterator[tuple[RendezvousServer, Address]]:
    address = (HOST, free_port())
    # The echo peer is on loopback, which the relay refuses by default.
    turn = (
        TurnConfig(realm=REALM, shared_secret=SECRET, relay_ip=HOST, denied_peers=())
        if relay
        else None
    )
    server = RendezvousServer(StunServiceConfig(primary=address), turn=turn, tcp=tcp or TcpConfig())
    await asyncio.wait_for(server.start(), TIMEOUT)
    try:
        yield server, address
    finally:
        server.close()


class SansIoClient(Protocol):
    def receive_datagram(self, data: bytes, source: Address, now: float) -> bool: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def next_event(self) -> Any: ...


class TcpDriver:
    """One TCP connection to the server, carrying one sans-I/O client's datagrams."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Address
    ) -> None:
        self.reader, self.writer, self.server = reader, writer, server
        self.decoder = StreamDecoder()
        self.events: list[Any] = []
        sockname = writer.get_extra_info("sockname")
        self.local: Address = (str(sockname[0]), int(sockname[1]))

    @classmethod
    async def connect(cls, server: Address) -> TcpDriver:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server), TIMEOUT)
        return cls(reader, writer, server)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # reset by the server
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)

    async def run(
        self, client: SansIoClient, until: Callable[[list[Any]], bool], timeout: float = TIMEOUT
    ) -> list[Any]:
        """Move datagrams both ways until ``until(events)`` holds; the events so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = loop.time()
            timer = client.get_timer()
            if timer is not None and now >= timer:
                client.handle_timer(now)
            for data, destination in client.datagrams_to_send(now):
                assert destination == self.server
                self.writer.write(frame(data))
            await asyncio.wait_for(self.writer.drain(), TIMEOUT)
            while (event := client.next_event()) is not None:
                self.events.append(event)
            if until(self.events):
                return self.events
            assert now < deadline, f"timed out; events so far: {self.events}"
            wait = deadline - now if timer is None else min(deadline, timer) - now
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), max(wait, 0.001))
            except TimeoutError:
                continue
            assert chunk, "the server closed the connection"
            for message in self.decoder.feed(chunk):
                client.receive_datagram(message, self.server, loop.time())

    async def request(self, message: bytes) -> StunMessage:
        """Send one STUN request (split in two writes) and read one answer."""
        self.writer.write(message[:7])
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)
        self.writer.write(message[7:])
        return StunMessage.parse(await self.read_message())

    async def read_message(self) -> bytes:
        while True:
            chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            assert chunk, "the server closed the connection"
            messages = self.decoder.feed(chunk)
            if messages:
                assert len(messages) == 1
                return messages[0]


def has(kind: type) -> Callable[[list[Any]], bool]:
    return lambda events: any(isinstance(event, kind) for event in events)


async def test_stun_binding_over_tcp_maps_the_tcp_source() -> None:
    async with serving() as (server, address):
        assert server.tcp is not None and server.tcp.address == address
        driver = await TcpDriver.connect(address)
        try:
            request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            answer = await driver.request(request.encode())
            assert answer.message_class is MessageClass.SUCCESS
            assert answer.transaction_id == request.transaction_id
            assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == driver.local
            # And again on the same connection: it stays open between requests.
            again = await driver.request(request.encode())
            assert again.transaction_id == request.transaction_id
        finally:
            await driver.close()


def rendezvous_client(name: str, server: Address) -> RendezvousClient:
    identity = Identity.generate()
    config = RendezvousClientConfig(server=server, name=name, public_key=identity.public_key)
    return RendezvousClient(config, identity.x25519_private)


async def test_login_and_introduction_over_tcp() -> None:
    async with serving(relay=True) as (_, address):
        alice, bob = rendezvous_client("alice", address), rendezvous_client("bob", address)
        to_alice, to_bob = await TcpDriver.connect(address), await TcpDriver.connect(address)
        try:
            loop = asyncio.get_running_loop()
            alice.login(loop.time())
            (logged_in,) = await to_alice.run(alice, has(LoggedIn))
            assert logged_in.public_endpoint == to_alice.local
            assert logged_in.turn is not None and logged_in.turn.server == address
            bob.login(loop.time())
            await to_bob.run(bob, has(LoggedIn))

            alice.connect("bob", loop.time())
            await to_alice.run(alice, has(Introduced))
            # The server-initiated introduction reaches bob on his connection, not over UDP.
            events = await to_bob.run(bob, has(Introduced))
            introduced = next(e for e in events if isinstance(e, Introduced))
            assert introduced.introduction.name == "alice"
            assert introduced.introduction.public_endpoint == to_alice.local
        finally:
            await to_alice.close()
            await to_bob.close()


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.sources: list[Address] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.sources.append((str(addr[0]), int(addr[1])))
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


async def test_turn_over_tcp_relays_to_a_udp_peer_and_back() -> None:
    loop = asyncio.get_running_loop()
    echo_transport, echo = await asyncio.wait_for(
        loop.create_datagram_endpoint(_Echo, local_addr=(PEER_HOST, 0)), TIMEOUT
    )
    sockname = echo_transport.get_extra_info("sockname")
    peer: Address = (str(sockname[0]), int(sockname[1]))
    try:
        async with serving(relay=True) as (server, address):
            # The echo peer stands for one alice was introduced to: the embedded relay
            # permits no other (rendezvous.introduced).
            assert server.core.introduced is not None
            server.core.introduced.introduce("alice", "echo", (PEER_HOST,), (), loop.time())
            username, password = rest_credentials(SECRET, "alice", int(time.time()) + 3600)
            client = TurnClient(
                TurnClientConfig(server=address, username=username, password=password)
            )
            driver = await TcpDriver.connect(address)
            try:
                client.allocate(loop.time())
                await driver.run(client, has(Allocated))
                assert server.core.turn is not None and server.core.turn.allocation_count == 1

                # CreatePermission and a Send indication; the answer as a Data indication.
                assert client.send(b"hello", peer, loop.time())
                events = await driver.run(client, has(DataReceived))
                received = next(e for e in events if isinstance(e, DataReceived))
                assert (received.peer, received.data, received.channel) == (
                    peer,
                    b"echo:hello",
                    None,
                )
                assert echo.sources == [client.relayed]

                # ChannelData both ways: 5 bytes of data, so padded on the stream.
                number = client.bind_channel(peer, loop.time())
                await driver.run(client, has(ChannelBound))
                driver.events.clear()
                assert client.send(b"chan!", peer, loop.time())
                events = await driver.run(client, has(DataReceived))
                received = next(e for e in events if isinstance(e, DataReceived))
                assert (received.data, received.channel) == (b"echo:chan!", number)
            finally:
                await driver.close()
    finally:
        echo_transport.close()


async def expect_closed(driver: TcpDriver) -> None:
    try:
        data = await asyncio.wait_for(driver.reader.read(65536), TIMEOUT)
    except ConnectionResetError:
        return
    assert data == b""


async def test_garbage_closes_the_connection_after_answering_what_came_before() -> None:
    async with serving() as (_, address):
        driver = await TcpDriver.connect(address)
        try:
            request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            driver.writer.write(request.encode() + b"\xff not a STUN message")
            answer = StunMessage.parse(await driver.read_message())
            assert answer.transaction_id == request.transaction_id
            await expect_closed(driver)
        finally:
            await driver.close()


async def test_silent_connections_are_closed() -> None:
    config = TcpConfig(first_message_timeout=0.1, idle_timeout=1.0)
    async with serving(tcp=config) as (_, address):
        silent, talking = await TcpDriver.connect(address), await TcpDriver.connect(address)
        try:
            request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            await talking.request(request.encode())
            await expect_closed(silent)  # never completed a message
            # The talking one outlives the first-message timeout, then idles out.
            await talking.request(request.encode())
            await expect_closed(talking)
        finally:
            await silent.close()
            await talking.close()


async def test_a_full_server_keeps_logged_in_peers_and_displaces_anonymous_clients() -> None:
    # 1,000 connections that each sent one Binding once held every slot for the 600 s idle
    # timeout, so that UDP-blocked peers could not log in. Now a newcomer displaces the
    # oldest connection whose client never logged in, and logged-in peers keep theirs.
    async with serving(tcp=TcpConfig(max_connections=2)) as (server, address):
        alice = rendezvous_client("alice", address)
        peer, anonymous = await TcpDriver.connect(address), await TcpDriver.connect(address)
        newcomers: list[TcpDriver] = []
        try:
            alice.login(asyncio.get_running_loop().time())
            await peer.run(alice, has(LoggedIn))
            request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            await anonymous.request(request.encode())
            newcomers.append(await TcpDriver.connect(address))
            await expect_closed(anonymous)  # (displaced: its client never logged in)
            answer = await newcomers[0].request(request.encode())
            assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == newcomers[0].local
            # Still full: the anonymous newcomer goes next, the logged-in peer never does.
            newcomers.append(await TcpDriver.connect(address))
            await expect_closed(newcomers[0])
            answer = await peer.request(request.encode())
            assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == peer.local
            assert server.tcp is not None and server.tcp.refused == 0
        finally:
            for driver in (peer, anonymous, *newcomers):
                await driver.close()


async def test_when_every_slot_holds_a_peer_newcomers_are_refused() -> None:
    async with serving(tcp=TcpConfig(max_connections=1)) as (server, address):
        alice = rendezvous_client("alice", address)
        peer = await TcpDriver.connect(address)
        second: TcpDriver | None = None
        try:
            alice.login(asyncio.get_running_loop().time())
            await peer.run(alice, has(LoggedIn))
            second = await TcpDriver.connect(address)  # accepted by the kernel, then dropped
            await expect_closed(second)
            assert server.tcp is not None and server.tcp.refused == 1
        finally:
            await peer.close()
            if second is not None:
                await second.close()


async def test_an_anonymous_connection_idles_out_sooner_than_a_peer() -> None:
    config = TcpConfig(first_message_timeout=5.0, idle_timeout=30.0, anonymous_idle_timeout=0.2)
    async with serving(tcp=config) as (_, address):
        alice = rendezvous_client("alice", address)
        peer, anonymous = await TcpDriver.connect(address), await TcpDriver.connect(address)
        try:
            alice.login(asyncio.get_running_loop().time())
            await peer.run(alice, has(LoggedIn))
            request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            await anonymous.request(request.encode())
            await expect_closed(anonymous)
            answer = await peer.request(request.encode())  # (the peer is still served)
            assert answer.get(AttrType.XOR_MAPPED_ADDRESS) == peer.local
        finally:
            await peer.close()
            await anonymous.close()


async def test_tcp_can_be_turned_off() -> None:
    address = (HOST, free_port())
    async with RendezvousServer(StunServiceConfig(primary=address), tcp=None) as server:
        assert server.tcp is None
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
