"""Opening a tunnel stream on a connection the peer has just closed: a refusal (the peer
closes the connection to refuse us) reads as the refusal, whichever step it overtakes."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from peer.adapters.accept_queue import ConnectionRefused
from peer.adapters.connection import Connection
from peer.adapters.tunnel_pipe import open_tunnel_stream
from peer.errors import LocalProtocolError
from peer.tunnel.wire import OpenRequest, RequestKind

REQUEST = OpenRequest(RequestKind.PUBLISH, "web", 8080)


class ClosedConnection:
    """What a Connection is once closed: open_stream raises, ``closed`` says why."""

    def __init__(self, peer: str, closed: str) -> None:
        self.peer, self.closed = peer, closed

    async def open_stream(self) -> None:
        raise LocalProtocolError(f"connection to {self.peer} closed: {self.closed}")


async def _open(connection: ClosedConnection) -> None:
    async with asyncio.timeout(5):
        await open_tunnel_stream(cast(Connection, connection), REQUEST)


async def test_a_close_by_the_peer_before_the_stream_opens_is_its_refusal() -> None:
    gateway = ClosedConnection(
        "rendezvous.gateway", "closed by rendezvous.gateway: carol may not publish"
    )
    with pytest.raises(ConnectionRefused, match="carol may not publish") as refused:
        await _open(gateway)
    assert refused.value.peer == "rendezvous.gateway"


async def test_a_close_of_our_own_stays_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="closed: dead"):
        await _open(ClosedConnection("bob", "dead"))
