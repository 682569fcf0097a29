"""Defects found in a review of the tunnels, each shown by a test on loopback with the real
rendezvous, and each fixed since: a reset after the client's half-close, the 129th
concurrent connection, publishing after a cancelled or partly refused publish, a client
gone while its target connects."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from natlab.services import rendezvous_process, wait_for_line
from peer.adapters import tunnel_pipe
from peer.adapters.connection import Connection
from peer.adapters.peer import Peer, PeerConfig
from peer.adapters.tunnel_pipe import TunnelRefusedError
from peer.identity import Identity
from peer.transport import events as te
from peer.tunnel.events import Published, TunnelClosed, TunnelEvent, TunnelOpened, TunnelRefused
from tests.support.loopback import free_port_pair

CONFIG = PeerConfig(probe_nat=False, keepalive=0)
TargetHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


class Events(list[TunnelEvent]):
    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def append(self, event: TunnelEvent) -> None:
        super().append(event)
        self._changed.set()

    async def until(self, predicate: Callable[[Events], bool]) -> None:
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()


@dataclass
class Pair:
    server: tuple[str, int]
    alice: Peer
    bob: Peer
    bob_events: Events = field(default_factory=Events)
    alice_events: Events = field(default_factory=Events)


@asynccontextmanager
async def pair(services: Iterable[str] = (), **expose: object) -> AsyncIterator[Pair]:
    """alice and bob on one rendezvous; bob exposes ``services`` to alice."""
    port = free_port_pair()
    with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
        server = ("127.0.0.1", port)
        async with (
            Peer(server, identity=Identity.generate(), name="alice", config=CONFIG) as a,
            Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as b,
        ):
            lab = Pair(server, a, b)
            exposing = asyncio.ensure_future(
                b.expose(
                    list(services),
                    allow=["alice"],
                    on_event=lab.bob_events.append,
                    **expose,  # type: ignore[arg-type]
                )
            )
            try:
                yield lab
            finally:
                exposing.cancel()
                await asyncio.gather(exposing, return_exceptions=True)


@asynccontextmanager
async def target(handler: TargetHandler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------- half-close and reset


async def _read_to_eof_then_reset(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Reads until the client's FIN, then aborts with an RST (as a server does that
    refuses a request it has read whole)."""
    while await reader.read(65536):
        pass
    _rst(writer)


async def test_a_reset_after_the_client_half_closed_reaches_the_client_as_a_reset() -> None:
    async with target(_read_to_eof_then_reset) as port, pair([f"svc=127.0.0.1:{port}"]) as lab:
        async with asyncio.timeout(30):
            forward = await lab.alice.forward("0", "bob:svc")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", forward.address[1])
                writer.write(b"a request")
                writer.write_eof()
                with pytest.raises(ConnectionResetError):
                    await reader.read()  # b"": a clean end, not the target's reset
                writer.close()
            finally:
                await forward.aclose()


# --------------------------------------------------------------- many open connections


async def _answer_at_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Holds the connection until the client's end, then answers (an idle keep-alive
    connection, an SSH session: open for as long as the client likes)."""
    while await reader.read(65536):
        pass
    writer.write(b"ok")
    await writer.drain()
    writer.close()


async def test_a_new_connection_is_served_while_128_others_stay_open() -> None:
    async with target(_answer_at_eof) as port, pair([f"svc=127.0.0.1:{port}"]) as lab:
        async with asyncio.timeout(60):
            forward = await lab.alice.forward("0", "bob:svc", on_event=lab.alice_events.append)
            idle: list[asyncio.StreamWriter] = []
            try:
                for _ in range(128):
                    _, writer = await asyncio.open_connection("127.0.0.1", forward.address[1])
                    writer.write(b"x")
                    idle.append(writer)
                await lab.bob_events.until(
                    lambda events: len([e for e in events if isinstance(e, TunnelOpened)]) == 128
                )
                reader, writer = await asyncio.open_connection("127.0.0.1", forward.address[1])
                writer.write(b"one more")
                writer.write_eof()
                async with asyncio.timeout(10):
                    assert await reader.read() == b"ok"  # hangs: no slot, no refusal
                writer.close()
            finally:
                for writer in idle:
                    writer.close()
                await forward.aclose()


# --------------------------------------------------------------- publish


@asynccontextmanager
async def publishing_server() -> AsyncIterator[tuple[tuple[str, int], int]]:
    """A rendezvous with a gateway: public ports P and P+1 may be published."""
    port, public = free_port_pair(), free_port_pair()
    args = ["--listen", f"127.0.0.1:{port}", "--publish-ports", f"{public}-{public + 1}"]

    def online(line: str) -> bool:
        try:
            return bool(json.loads(line).get("event") == "gateway_online")
        except ValueError:
            return False

    with rendezvous_process(args) as process:
        await asyncio.to_thread(wait_for_line, process, online, 20)
        yield ("127.0.0.1", port), public


async def _published(me: Peer, pairs: list[tuple[str, int]]) -> asyncio.Future[None]:
    """``me.publish(pairs)`` running, once its first port is open (or it has failed)."""
    opened = asyncio.Event()

    def sink(event: TunnelEvent) -> None:
        if isinstance(event, Published) and event.open:
            opened.set()

    task = asyncio.ensure_future(me.publish(pairs, on_event=sink, retry=False))
    waiting = asyncio.ensure_future(opened.wait())
    await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    return task


async def test_publishing_again_after_cancelling_a_publish_gets_the_port() -> None:
    async with (
        target(_answer_at_eof) as port,
        publishing_server() as (server, public),
        asyncio.timeout(60),
        Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as bob,
    ):
        service = f"svc=127.0.0.1:{port}"
        first = await _published(bob, [(service, public)])
        assert not first.done()  # published, serving
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        again = await _published(bob, [(service, public)])
        try:
            assert not again.done(), again.exception()  # TunnelRefusedError: is taken
        finally:
            again.cancel()
            await asyncio.gather(again, return_exceptions=True)


async def test_a_refused_publish_leaves_no_port_claimed() -> None:
    async with (
        target(_answer_at_eof) as port,
        publishing_server() as (server, public),
        asyncio.timeout(60),
        Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as bob,
        Peer(server, identity=Identity.generate(), name="carol", config=CONFIG) as carol,
    ):
        service = f"svc=127.0.0.1:{port}"
        other = f"other=127.0.0.1:{port}"
        with pytest.raises(TunnelRefusedError, match="outside the published range"):
            await bob.publish([(service, public), (other, public + 5)], retry=False)
        task = await _published(carol, [(service, public)])
        try:
            assert not task.done(), task.exception()  # bob's port: "is taken"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------- errors as events


async def test_a_client_gone_while_the_target_connects_is_an_event_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with target(_answer_at_eof) as port, pair([f"svc=127.0.0.1:{port}"]) as lab:
        connecting, release, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()
        open_connection = asyncio.open_connection

        async def slow_target(host: str, to: int, **kwargs: object) -> object:
            if to == port:  # (bob's connection to its target: slow, as across a WAN)
                connecting.set()
                await release.wait()
            return await open_connection(host, to, **kwargs)  # type: ignore[arg-type]

        on_event = Connection._on_event

        def spy(self: Connection, event: te.TransportEvent) -> None:
            if self.peer == "alice" and isinstance(event, te.StopSendingReceived):
                stopped.set()  # (bob learnt that alice's client went away)
            on_event(self, event)

        failed: list[str] = []
        changed = lab.bob_events._changed

        class Log:
            def error(self, event: str, **fields: object) -> None:
                failed.append(f"{event}: {fields.get('error')}")
                changed.set()  # (wakes the wait below as an event would)

        monkeypatch.setattr(asyncio, "open_connection", slow_target)
        monkeypatch.setattr(Connection, "_on_event", spy)
        monkeypatch.setattr(tunnel_pipe, "log", Log())
        async with asyncio.timeout(30):
            forward = await lab.alice.forward("0", "bob:svc")
            try:
                _, writer = await open_connection("127.0.0.1", forward.address[1])
                writer.write(b"x")
                await connecting.wait()
                _rst(writer)  # the client gives up
                await stopped.wait()
                release.set()
                await lab.bob_events.until(
                    lambda events: (
                        bool(failed)
                        or any(isinstance(e, TunnelClosed | TunnelRefused) for e in events)
                    )
                )
            finally:
                await forward.aclose()
        assert not failed  # tunnel_task_failed: PeerError: stream N: the peer stopped reading
