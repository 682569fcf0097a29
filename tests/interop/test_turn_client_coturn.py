"""Our TURN client against coturn on loopback, over a real UDP socket.

coturn runs as a full TURN server with REST credentials (``--use-auth-secret``) and a short
nonce lifetime, so the 401 and 438 dances happen for real; ``--allow-loopback-peers`` lets
it relay to an echo peer on 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from peer.events import (
    Allocated,
    AllocationClosed,
    AllocationFailed,
    ChannelBound,
    DataReceived,
    PermissionCreated,
    TurnEvent,
)
from peer.turn_client import TurnClient, TurnClientConfig, TurnState
from rendezvous.turn_auth import rest_credentials
from stunproto import MessageClass, Method, StunMessage, new_transaction_id
from stunproto.attributes import Address
from stunproto.client import RetransmitPolicy

pytestmark = pytest.mark.skipif(shutil.which("turnserver") is None, reason="needs coturn")

HOST, PEER_HOST = "127.0.0.1", "127.0.0.2"
SECRET = b"interop shared secret"
REALM = "holepunch.test"
NONCE_LIFETIME = 1  # seconds: short enough to meet a 438 within the test
STEP = 5.0  # timeout of every await below
E = TypeVar("E")


def _free_udp_port(host: str, span: int = 1) -> int:
    """A port P with P..P+span-1 free on ``host`` (bind-tested, then released)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000 - span)
        sockets: list[socket.socket] = []
        try:
            for candidate in range(port, port + span):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((host, candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free UDP port")


def _answers_binding(server: Address, timeout: float) -> bool:
    request = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), server)
            data, _ = sock.recvfrom(2048)
        except OSError:  # timeout, or ICMP port unreachable while it starts
            return False
    return data[8:20] == request.transaction_id


@dataclass
class TurnServer:
    address: Address
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    port = _free_udp_port(HOST)
    relay_min = _free_udp_port(HOST, span=20)
    with tempfile.TemporaryDirectory(prefix="coturn-turn-") as tmp:
        log_path = Path(tmp) / "turnserver.log"
        argv = [
            "turnserver",
            "-n",  # ignore /etc/turnserver.conf
            "-L", HOST, "-p", str(port),
            "--relay-ip", HOST,
            "--min-port", str(relay_min), "--max-port", str(relay_min + 19),
            "--use-auth-secret", "--static-auth-secret", SECRET.decode(),
            "--realm", REALM,
            f"--stale-nonce={NONCE_LIFETIME}",
            "--allow-loopback-peers",
            "--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--simple-log",
            "--pidfile", os.path.join(tmp, "turnserver.pid"),
            "--userdb", os.path.join(tmp, "turndb.sqlite"),
            "-m", "1",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        server = TurnServer((HOST, port), proc, log_path)
        try:
            deadline = time.monotonic() + 15
            while not _answers_binding(server.address, 0.2):
                if proc.poll() is not None:
                    pytest.fail(f"turnserver exited with {proc.returncode}:\n{server.log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"turnserver not answering after 15 s:\n{server.log()}")
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class Driver(asyncio.DatagramProtocol):
    """Runs a TurnClient on one asyncio UDP socket: datagrams in, timers via call_at."""

    def __init__(self, client: TurnClient) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        self.unconsumed: list[bytes] = []
        self.sent: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A DatagramTransport in practice (not by class on Python 3.11's selector loop).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not self.client.receive_datagram(data, (addr[0], addr[1]), self.loop.time()):
            self.unconsumed.append(data)
        self.flush()

    def command(self, name: str, *args: Any) -> Any:
        result = getattr(self.client, name)(*args, self.loop.time())
        self.flush()
        return result

    def flush(self) -> None:
        assert self.transport is not None
        for data, destination in self.client.datagrams_to_send(self.loop.time()):
            self.sent.append(data)
            self.transport.sendto(data, destination)
        while (event := self.client.next_event()) is not None:
            self.events.put_nowait(event)
        if self._timer is not None:
            self._timer.cancel()
        at = self.client.get_timer()
        self._timer = None if at is None else self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.client.handle_timer(self.loop.time())
        self.flush()

    async def expect(self, kind: type[E]) -> E:
        event = await asyncio.wait_for(self.events.get(), STEP)
        assert isinstance(event, kind), event
        return event

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


class Echo(asyncio.DatagramProtocol):
    """A plain UDP peer that sends every datagram back, remembering who sent it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[tuple[bytes, Address]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A DatagramTransport in practice (not by class on Python 3.11's selector loop).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.transport is not None
        self.seen.append((data, (addr[0], addr[1])))
        self.transport.sendto(data, addr)


async def _start(server: TurnServer, **overrides: Any) -> tuple[Driver, Echo, Address]:
    loop = asyncio.get_running_loop()
    username, password = rest_credentials(SECRET, "alice", int(time.time()) + 3600)
    settings: dict[str, Any] = {
        "server": server.address,
        "username": username,
        "password": password,
        "policy": RetransmitPolicy(rto=0.1, max_sends=6, rto_max=0.8, final_wait=4),
    }
    settings.update(overrides)
    client = TurnClient(TurnClientConfig(**settings))
    _, driver = await loop.create_datagram_endpoint(lambda: Driver(client), local_addr=(HOST, 0))
    transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=(PEER_HOST, 0))
    peer = transport.get_extra_info("sockname")
    return driver, echo, (peer[0], peer[1])


async def _scenario(server: TurnServer) -> None:
    driver, echo, peer = await _start(server)
    try:
        driver.command("allocate")
        allocated = await driver.expect(Allocated)
        assert allocated.relayed[0] == HOST and allocated.mapped is not None
        assert allocated.lifetime == 600
        driver.command("create_permission", peer)
        assert await driver.expect(PermissionCreated) == PermissionCreated(PEER_HOST)

        # A Send indication out, a Data indication back, both through the relayed address.
        driver.command("send", b"via send indication", peer)
        received = await driver.expect(DataReceived)
        assert received == DataReceived(peer, b"via send indication", None)
        assert echo.seen[-1] == (b"via send indication", allocated.relayed)

        channel = driver.command("bind_channel", peer)
        assert await driver.expect(ChannelBound) == ChannelBound(peer, channel)
        driver.command("send", b"via channel data", peer)
        assert await driver.expect(DataReceived) == DataReceived(peer, b"via channel data", channel)
        assert driver.sent[-1][:2] == channel.to_bytes(2, "big")

        # Let the nonce go stale (a server timer, nothing to poll; coturn counts whole
        # seconds): the next request earns a 438 and is retried with the new nonce without
        # the caller noticing.
        await asyncio.sleep(NONCE_LIFETIME + 2)
        sent_before = len(driver.sent)
        driver.command("refresh")
        await _wait_idle(driver)
        refreshes = [StunMessage.parse(d) for d in driver.sent[sent_before:]]
        assert [m.method for m in refreshes] == [Method.REFRESH, Method.REFRESH]
        assert driver.client.state is TurnState.ALLOCATED
        assert driver.events.empty()

        # Still relaying after the new nonce; then release the allocation.
        driver.command("send", b"after the nonce", peer)
        assert await driver.expect(DataReceived) == DataReceived(peer, b"after the nonce", channel)
        driver.command("close")
        await driver.expect(AllocationClosed)
        assert driver.unconsumed == []
    finally:
        driver.stop()
        if echo.transport is not None:
            echo.transport.close()


async def _wait_idle(driver: Driver) -> None:
    """Until no request is in flight (polled; each poll is a few milliseconds)."""
    deadline = driver.loop.time() + STEP
    while driver.client.pending_requests:
        assert driver.loop.time() < deadline, "request still in flight"
        await asyncio.sleep(0.01)


def test_relay_through_coturn(coturn: TurnServer) -> None:
    try:
        asyncio.run(asyncio.wait_for(_scenario(coturn), 60))
    except BaseException:
        print(coturn.log()[-4000:])
        raise


async def _expired_credentials(server: TurnServer) -> AllocationFailed:
    username, password = rest_credentials(SECRET, "alice", int(time.time()) - 60)
    driver, echo, _ = await _start(server, username=username, password=password)
    try:
        driver.command("allocate")
        return await driver.expect(AllocationFailed)
    finally:
        driver.stop()
        if echo.transport is not None:
            echo.transport.close()


def test_expired_rest_credentials_are_refused(coturn: TurnServer) -> None:
    failed = asyncio.run(asyncio.wait_for(_expired_credentials(coturn), 30))
    assert failed.code == 401
