"""Incoming connections nobody takes (peer.adapters.accept_queue): at most
``PeerConfig.accept_backlog`` wait for ``Peer.accept()``, and the caller of any other gets
the refusal from ``connect()``; real peers and the real rendezvous on loopback, and the
queue alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import pytest

from peer.adapters.accept_queue import (
    BACKLOG_FULL,
    NOT_ACCEPTING,
    AcceptQueue,
    ConnectionRefused,
)
from peer.adapters.connection import Connection
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.events import SessionClosed
from peer.identity import Identity
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from tests.support.loopback import free_port_pair

TIMEOUT = 10.0
CONFIG = PeerConfig(probe_nat=False, keepalive=0)


@asynccontextmanager
async def loopback() -> AsyncIterator[Callable[..., Any]]:
    """A rendezvous on loopback; ``await peer(name, **config)`` logs a peer in."""
    address = ("127.0.0.1", free_port_pair())
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(RendezvousServer(StunServiceConfig(primary=address)))

        async def peer(name: str, **config: Any) -> Peer:
            config_ = replace(CONFIG, **config)
            me = Peer(address, identity=Identity.generate(), name=name, config=config_)
            async with asyncio.timeout(TIMEOUT):
                return await stack.enter_async_context(me)

        yield peer


async def test_beyond_the_backlog_a_caller_is_refused_with_the_reason() -> None:
    async with loopback() as peer, asyncio.timeout(4 * TIMEOUT):
        bob = await peer("bob", accept_backlog=1)  # used only to connect: nobody accepts
        alice, carol, dave = [await peer(name) for name in ("alice", "carol", "dave")]
        to_bob = await alice.connect("bob", timeout=TIMEOUT)  # waits in bob's backlog
        with pytest.raises(ConnectionRefused) as refused:
            await carol.connect("bob", timeout=TIMEOUT)
        assert refused.value.peer == "bob" and refused.value.reason == NOT_ACCEPTING
        assert str(refused.value) == "bob refused the connection: not accepting connections"
        assert isinstance(refused.value, PeerError)

        # The one that waited is live: bob takes it and hears alice.
        await to_bob.send(b"queued, then taken")
        from_alice = await bob.accept()
        assert from_alice.peer == "alice"
        assert await anext(aiter(from_alice)) == b"queued, then taken"

        # Room again for one; then someone has asked, so the next one hears "backlog full".
        await carol.connect("bob", timeout=TIMEOUT)
        with pytest.raises(ConnectionRefused, match="bob refused the connection: backlog full"):
            await dave.connect("bob", timeout=TIMEOUT)
        assert (await bob.accept()).peer == "carol"
        assert to_bob.closed is None  # nobody else was disturbed


async def test_a_zero_backlog_takes_only_what_accept_waits_for() -> None:
    async with loopback() as peer, asyncio.timeout(4 * TIMEOUT):
        bob = await peer("bob", accept_backlog=0)
        alice, carol = await peer("alice"), await peer("carol")
        accepting = asyncio.ensure_future(bob.accept())  # waiting long before alice is in
        to_bob = await alice.connect("bob", timeout=TIMEOUT)
        from_alice = await accepting
        assert from_alice.peer == "alice"
        await from_alice.send(b"taken at once")
        assert await anext(aiter(to_bob)) == b"taken at once"
        with pytest.raises(ConnectionRefused, match=BACKLOG_FULL):
            await carol.connect("bob", timeout=TIMEOUT)


async def test_a_caller_that_hung_up_while_queued_is_not_handed_out() -> None:
    async with loopback() as peer, asyncio.timeout(4 * TIMEOUT):
        bob = await peer("bob")
        alice, carol = await peer("alice"), await peer("carol")
        to_bob = await alice.connect("bob", timeout=TIMEOUT)
        await to_bob.close()
        while not isinstance(event := await bob.events.get(), SessionClosed):
            pass
        assert event.peer == "alice"
        await carol.connect("bob", timeout=TIMEOUT)
        assert (await bob.accept()).peer == "carol"


async def test_a_screen_refuses_by_name() -> None:
    async with loopback() as peer, asyncio.timeout(4 * TIMEOUT):
        bob = await peer("bob")
        alice, carol = await peer("alice"), await peer("carol")
        bob.screen_incoming(lambda name: "not you" if name == "carol" else None)
        with pytest.raises(ConnectionRefused, match="bob refused the connection: not you"):
            await carol.connect("bob", timeout=TIMEOUT)
        await alice.connect("bob", timeout=TIMEOUT)
        assert (await bob.accept()).peer == "alice"


async def test_accept_raises_once_the_peer_is_closed() -> None:
    async with loopback() as peer, asyncio.timeout(TIMEOUT):
        bob = await peer("bob")
        accepting = asyncio.ensure_future(bob.accept())
        await peer("alice")  # (a login: round trips, so accept() is waiting by now)
        assert not accepting.done()
        bob.close()
        with pytest.raises(PeerError, match="no more connections: the peer is closed"):
            await accepting


@pytest.mark.parametrize("backlog", [-1, True, 1.5, "16"])
def test_the_backlog_is_validated(backlog: object) -> None:
    with pytest.raises(ValueError, match="accept_backlog must be an integer >= 0"):
        PeerConfig(accept_backlog=backlog)  # type: ignore[arg-type]
    assert PeerConfig(accept_backlog=0).accept_backlog == 0
    assert PeerConfig().accept_backlog == 16


# ---------------------------------------------------------------- the queue alone


class FakeConnection:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed: str | None = None


def fake(peer: str) -> Connection:
    return cast(Connection, FakeConnection(peer))


async def test_the_queue_hands_over_in_order_and_counts_only_open_ones() -> None:
    queue = AcceptQueue(backlog=2)
    first, second, third = fake("a"), fake("b"), fake("c")
    assert queue.offer(first) is None and queue.offer(second) is None
    assert queue.offer(third) == NOT_ACCEPTING  # nobody ever asked
    first.closed = "closed by a"  # hung up while it waited: frees its place
    assert queue.offer(third) is None
    assert await asyncio.wait_for(queue.get(), TIMEOUT) is second
    assert await asyncio.wait_for(queue.get(), TIMEOUT) is third
    assert queue.offer(fake("d")) is None and queue.offer(fake("e")) is None
    assert queue.offer(fake("f")) == BACKLOG_FULL  # someone asked: the backlog is full


async def test_a_cancelled_accept_loses_nothing() -> None:
    queue = AcceptQueue(backlog=0)
    conn = fake("a")
    offered: list[str | None] = []

    def offer_then_cancel() -> None:
        offered.append(queue.offer(conn))  # handed to the waiting get() ...
        getter.cancel()  # ... which is cancelled before it runs: the connection goes back

    getter = asyncio.ensure_future(queue.get())  # its first step runs before the callback
    asyncio.get_running_loop().call_soon(offer_then_cancel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(getter, TIMEOUT)
    assert offered == [None]
    assert await asyncio.wait_for(queue.get(), TIMEOUT) is conn
    queue.close("closing")
    assert queue.offer(fake("b")) == "closing"
