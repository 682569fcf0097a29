"""``Peer.socks`` on loopback with the real rendezvous: alice's SOCKS5 server sends its
connections out through bob, an exit (``expose(exit=True)``). The targets are on
127.0.0.1, so bob lets its exit reach loopback in all but the test of that rule."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from natlab.services import rendezvous_process
from peer.adapters import tunnel_pipe
from peer.adapters.peer import Peer, PeerConfig
from peer.adapters.tunnel_expose import Exposer
from peer.adapters.tunnel_pipe import TunnelRefusedError
from peer.identity import Identity
from peer.tunnel.events import TunnelEvent, TunnelOpened, TunnelRefused
from peer.tunnel.socks5 import (
    AuthMethod,
    ReplyCode,
    encode_connect,
    encode_greeting,
    encode_userpass,
    parse_reply,
)
from tests.support.loopback import free_port_pair

CONFIG = PeerConfig(probe_nat=False, keepalive=0)


async def _sha_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()  # "N\n": answers N bytes, then their SHA-256
    size = int(line)
    data = bytes(range(256)) * (size // 256)
    writer.write(data + hashlib.sha256(data).digest())
    await writer.drain()
    writer.close()


@asynccontextmanager
async def socks_pair(
    *, exit_private: bool = True, exit: bool = True
) -> AsyncIterator[tuple[Peer, Peer, int, list[TunnelEvent]]]:
    port = free_port_pair()
    target = await asyncio.start_server(_sha_server, "127.0.0.1", 0)
    events: list[TunnelEvent] = []
    try:
        with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
            server = ("127.0.0.1", port)
            async with (
                Peer(server, identity=Identity.generate(), name="alice", config=CONFIG) as a,
                Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as b,
            ):
                services = [] if exit else ["web=127.0.0.1:1"]
                exposing = asyncio.ensure_future(
                    b.expose(
                        services,
                        allow=["alice"],
                        exit=exit,
                        exit_private=exit_private,
                        on_event=events.append,
                    )
                )
                try:
                    yield a, b, target.sockets[0].getsockname()[1], events
                finally:
                    exposing.cancel()
                    await asyncio.gather(exposing, return_exceptions=True)
    finally:
        target.close()


async def _socks_connect(
    port: int, host: str, target_port: int, *, user: tuple[str, str] | None = None
) -> tuple[ReplyCode, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    method = AuthMethod.USERNAME_PASSWORD if user else AuthMethod.NO_AUTHENTICATION
    writer.write(encode_greeting([method]))
    choice = await reader.readexactly(2)
    assert choice == bytes([5, method])
    if user is not None:
        writer.write(encode_userpass(*user))
        status = await reader.readexactly(2)
        if status != b"\x01\x00":
            return ReplyCode.NOT_ALLOWED, reader, writer
    writer.write(encode_connect(host, target_port))
    head = await reader.read(4)
    rest = await reader.read(64)
    code, _, _ = parse_reply(head + rest)
    return code, reader, writer


async def test_a_connection_through_the_exit_by_ip_and_by_name() -> None:
    async with socks_pair() as (alice, _, target_port, events), asyncio.timeout(30):
        socks = await alice.socks("0", via="bob")
        try:
            for host in ("127.0.0.1", "localhost"):
                code, reader, writer = await _socks_connect(socks.address[1], host, target_port)
                assert code is ReplyCode.SUCCEEDED
                writer.write(b"1048576\n")
                data = await reader.read()
                writer.close()
                assert len(data) == 1048576 + 32
                assert hashlib.sha256(data[:-32]).digest() == data[-32:]
        finally:
            await socks.aclose()
        assert len([e for e in events if isinstance(e, TunnelOpened)]) == 2


async def test_user_and_password_are_required_when_configured() -> None:
    async with socks_pair() as (alice, _, target_port, _), asyncio.timeout(30):
        socks = await alice.socks("0", via="bob", credentials={"ann": "s3cret"})
        try:
            code, _, writer = await _socks_connect(
                socks.address[1], "127.0.0.1", target_port, user=("ann", "s3cret")
            )
            writer.close()
            assert code is ReplyCode.SUCCEEDED
            code, _, writer = await _socks_connect(
                socks.address[1], "127.0.0.1", target_port, user=("ann", "wrong")
            )
            writer.close()
            assert code is ReplyCode.NOT_ALLOWED
        finally:
            await socks.aclose()


async def test_the_exit_refuses_loopback_unless_told_and_says_so() -> None:
    async with socks_pair(exit_private=False) as (alice, _, target_port, events):
        async with asyncio.timeout(30):
            seen: list[TunnelEvent] = []
            socks = await alice.socks("0", via="bob", on_event=seen.append)
            try:
                for host in ("127.0.0.1", "localhost", "::1"):
                    code, _, writer = await _socks_connect(socks.address[1], host, target_port)
                    writer.close()
                    assert code is ReplyCode.NOT_ALLOWED, host
            finally:
                await socks.aclose()
        refused = [e for e in events if isinstance(e, TunnelRefused)]
        assert len(refused) == 3 and all("does not connect to" in e.reason for e in refused)


async def test_a_peer_that_is_not_an_exit_is_an_error_at_start() -> None:
    async with socks_pair(exit=False) as (alice, _, _, _), asyncio.timeout(30):
        with pytest.raises(TunnelRefusedError, match="not an exit"):
            await alice.socks("0", via="bob")


async def test_an_exit_that_never_answers_gets_the_client_a_socks_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bob's exit is stuck connecting to the target, so alice's wait for its reply times
    # out: her SOCKS client is told (host unreachable), not reset without a word.
    async def stuck(*_: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Exposer, "_connect", stuck)
    monkeypatch.setattr(tunnel_pipe, "REPLY_TIMEOUT", 0.3)
    async with socks_pair() as (alice, _, target_port, _), asyncio.timeout(30):
        refused: list[TunnelEvent] = []
        socks = await alice.socks("0", via="bob", on_event=refused.append)
        try:
            code, reader, writer = await _socks_connect(socks.address[1], "127.0.0.1", target_port)
            assert code is ReplyCode.HOST_UNREACHABLE
            assert await reader.read() == b""  # then the end, in order
            writer.close()
        finally:
            await socks.aclose()
        (event,) = [e for e in refused if isinstance(e, TunnelRefused)]
        assert "no reply from the peer within 0.3 s" in event.reason
