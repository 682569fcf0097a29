"""Staying reachable with the real rendezvous on loopback: the server stops and a new one
(knowing nobody) starts on the same port; a waiting peer reports Offline, then Online, and
another peer connects to it -- over UDP, over TCP (the connection reopened, the relay
allocation made again), and through ``peer chat --json``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from natlab.services import JsonLines, chat_args, rendezvous_process
from peer.adapters.peer import Peer, PeerConfig, Transport
from peer.events import AgentEvent, Allocated, Offline, Online
from peer.identity import Identity
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from rendezvous.introductions import RendezvousConfig
from rendezvous.turn_config import TurnConfig
from stunproto.attributes import Address
from tests.support.loopback import free_port_pair

# The server (and its relay) on 127.0.0.2, the peers on 127.0.0.1: the relay never relays to
# its own IP (except relay ports), so peers sharing it would be refused by chance.
HOST = "127.0.0.2"
# Refreshes every second, so a lost registration is noticed within one.
UDP = PeerConfig(probe_nat=False, keepalive=1.0, transport=Transport.UDP)
TCP = PeerConfig(probe_nat=False, keepalive=1.0, transport=Transport.TCP)
TIMEOUT = 10.0
SERVER_KEY = bytes(range(32))


def server_for(address: Address) -> RendezvousServer:
    # The relay must accept loopback peers here (it refuses them by default).
    turn = TurnConfig(realm="loopback", shared_secret=b"s", relay_ip=HOST, denied_peers=())
    # A restarted server keeps its key (rendezvous.server_key keeps it in a file): the
    # peers pinned it at their first login and refuse another.
    config = RendezvousConfig(stun=StunServiceConfig(primary=address), server_key=SERVER_KEY)
    return RendezvousServer(config, turn=turn)


@asynccontextmanager
async def restartable() -> AsyncIterator[tuple[Address, list[RendezvousServer]]]:
    """A server on a fixed port; ``restart(servers)`` replaces it."""
    address = (HOST, free_port_pair(HOST, "127.0.0.1"))
    servers = [server_for(address)]
    await asyncio.wait_for(servers[0].start(), TIMEOUT)
    try:
        yield address, servers
    finally:
        servers[-1].close()


async def restart(address: Address, servers: list[RendezvousServer]) -> None:
    servers[-1].close()  # its sockets, TCP connections and relay allocations go with it
    fresh = server_for(address)
    await asyncio.wait_for(fresh.start(), TIMEOUT)
    servers.append(fresh)


async def until(peer: Peer, kind: type) -> list[AgentEvent]:
    """The peer's events up to and including the first of ``kind``."""
    seen: list[AgentEvent] = []
    async with asyncio.timeout(TIMEOUT):
        while not isinstance(event := await peer.events.get(), kind):
            seen.append(event)
    return [*seen, event]


def drain(peer: Peer) -> None:
    while not peer.events.empty():
        peer.events.get_nowait()


async def test_a_waiting_peer_is_back_after_the_server_restarts() -> None:
    async with (
        restartable() as (address, servers),
        Peer(address, identity=Identity.generate(), name="bob", config=UDP) as bob,
    ):
        drain(bob)
        await restart(address, servers)
        events = await until(bob, Online)
        offline = [event for event in events if isinstance(event, Offline)]
        assert len(offline) == 1 and "registration lost" in offline[0].reason
        assert 0.8 <= offline[0].retry_in <= 1.2
        assert events[-1] == Online(bob.public_endpoint)  # type: ignore[arg-type]
        async with (
            Peer(address, identity=Identity.generate(), name="alice", config=UDP) as alice,
            asyncio.timeout(TIMEOUT),
        ):
            to_bob = await alice.connect("bob")
            to_alice = await bob.accept()
            await to_bob.send(b"are you there?")
            assert await anext(aiter(to_alice)) == b"are you there?"


async def test_over_tcp_the_connection_is_reopened_and_the_relay_allocated_again() -> None:
    async with (
        restartable() as (address, servers),
        Peer(address, identity=Identity.generate(), name="bob", config=TCP) as bob,
    ):
        assert bob.transport is Transport.TCP
        drain(bob)
        await restart(address, servers)
        events = await until(bob, Online)
        offline = [event for event in events if isinstance(event, Offline)]
        assert len(offline) == 1 and "TCP connection" in offline[0].reason
        # Bob is reachable only through the relay: his allocation died with the old server,
        # and he made a new one on the new server.
        await until(bob, Allocated)
        async with (
            Peer(address, identity=Identity.generate(), name="alice", config=UDP) as alice,
            asyncio.timeout(TIMEOUT),
        ):
            to_bob = await alice.connect("bob")
            to_alice = await bob.accept()
            assert str(to_bob.path) == "relay"
            await to_alice.send(b"through the new relay")
            assert await anext(aiter(to_bob)) == b"through the new relay"


def chat(state: Path, port: int, name: str, *extra: str) -> subprocess.Popen[bytes]:
    args = chat_args(f"{HOST}:{port}", state, name, "--no-probe", "--keepalive", "1", *extra)
    return subprocess.Popen(
        [sys.executable, "-m", "peer", "chat", "--json", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def test_chat_reports_offline_then_online_and_is_reachable(tmp_path: Path) -> None:
    port = free_port_pair(HOST, "127.0.0.1")
    listen = ["--listen", f"{HOST}:{port}"]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with rendezvous_process(listen):
            bob = chat(tmp_path, port, "bob")
            processes.append(bob)
            out = JsonLines(bob)
            first = out.next("online", TIMEOUT)
        with rendezvous_process(listen):  # the same port, nobody known
            offline = out.next("offline", TIMEOUT)
            assert isinstance(offline["reason"], str) and offline["reason"]
            assert isinstance(offline["retry_in"], float) and 0.8 <= offline["retry_in"] <= 1.2
            again = out.next("online", TIMEOUT)
            assert again.keys() == first.keys() and again["public"] == first["public"]
            alice = chat(tmp_path, port, "alice", "--to", "bob")
            processes.append(alice)
            assert JsonLines(alice).next("connected", TIMEOUT)["peer"] == "bob"
            assert out.next("connected", TIMEOUT)["peer"] == "alice"
            assert [item["event"] for item in out.seen].count("offline") == 1
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
