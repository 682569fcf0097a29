"""Publishing through the rendezvous's gateway, on loopback: bob publishes a local
service, and a plain TCP client (no toolkit) reaches it at the server's public port."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from natlab.services import rendezvous_process, wait_for_line
from peer.adapters.accept_queue import ConnectionRefused
from peer.adapters.peer import Peer, PeerConfig
from peer.adapters.tunnel_pipe import TunnelRefusedError
from peer.identity import Identity
from peer.tunnel.events import Published, TunnelEvent
from tests.support.loopback import free_port_pair

CONFIG = PeerConfig(probe_nat=False, keepalive=0)


def _logged(event: str) -> object:
    def predicate(line: str) -> bool:
        try:
            return bool(json.loads(line).get("event") == event)
        except ValueError:
            return False

    return predicate


@contextmanager
def publishing_server(
    *extra: str,
) -> Iterator[tuple[tuple[str, int], int, subprocess.Popen[bytes]]]:
    port = free_port_pair()
    public = free_port_pair()
    args = ["--listen", f"127.0.0.1:{port}", "--publish-ports", f"{public}-{public + 1}", *extra]
    with rendezvous_process(args) as process:
        wait_for_line(process, _logged("gateway_online"), 20)  # type: ignore[arg-type]
        yield ("127.0.0.1", port), public, process


async def _digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    while chunk := await reader.read(65536):
        digest.update(chunk)
    writer.write(digest.digest())
    await writer.drain()
    writer.close()


@asynccontextmanager
async def published(
    server: tuple[str, int], public: int, name: str = "bob"
) -> AsyncIterator[list[TunnelEvent]]:
    target = await asyncio.start_server(_digest_server, "127.0.0.1", 0)
    service = f"digest=127.0.0.1:{target.sockets[0].getsockname()[1]}"
    events: list[TunnelEvent] = []
    got_port = asyncio.Event()

    def sink(event: TunnelEvent) -> None:
        events.append(event)
        if isinstance(event, Published):
            got_port.set()

    try:
        async with Peer(server, identity=Identity.generate(), name=name, config=CONFIG) as me:
            task = asyncio.ensure_future(
                me.publish([(service, public)], on_event=sink, retry=False)
            )
            waiting = asyncio.ensure_future(got_port.wait())
            await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if task.done():
                task.result()  # (raises the refusal)
            try:
                yield events
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        target.close()


async def test_an_outside_client_reaches_the_published_service() -> None:
    with publishing_server() as (server, public, _):
        async with asyncio.timeout(60), published(server, public) as events:
            [event] = [e for e in events if isinstance(e, Published)]
            assert event.public == f"127.0.0.1:{public}" and event.open
            payloads = [random.Random(i).randbytes(300_000 + i) for i in range(20)]

            async def upload(payload: bytes) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", public)
                writer.write(payload)
                writer.write_eof()
                answer = await reader.read()
                writer.close()
                return answer

            answers = await asyncio.gather(*(upload(p) for p in payloads))
            assert answers == [hashlib.sha256(p).digest() for p in payloads]


async def test_the_owner_going_offline_closes_its_public_port() -> None:
    with publishing_server() as (server, public, process):
        async with asyncio.timeout(60):
            async with published(server, public):
                _, writer = await asyncio.open_connection("127.0.0.1", public)  # (open)
                writer.close()
            await asyncio.to_thread(wait_for_line, process, _logged("unpublished"), 20)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", public)


async def test_a_port_has_one_owner_and_outside_the_range_is_refused() -> None:
    with publishing_server() as (server, public, _):
        async with asyncio.timeout(60), published(server, public):
            with pytest.raises(TunnelRefusedError, match="is taken"):
                async with published(server, public, name="carol"):
                    pass
            with pytest.raises(TunnelRefusedError, match="outside the published range"):
                async with published(server, public + 5, name="dave"):
                    pass


async def test_only_the_allowed_names_may_publish() -> None:
    with publishing_server("--publish-allow", "bob") as (server, public, _):
        async with asyncio.timeout(60):
            with pytest.raises(ConnectionRefused, match="carol may not publish"):
                async with published(server, public, name="carol"):
                    pass
            async with published(server, public) as events:
                assert any(isinstance(e, Published) for e in events)


async def _site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP server that names itself (its port) in every answer."""
    await reader.readuntil(b"\r\n\r\n")
    body = f"site on {writer.get_extra_info('sockname')[1]}".encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    writer.write(body)
    await writer.drain()
    writer.close()


async def _get(port: int, host: str | None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = f"Host: {host}\r\n" if host is not None else ""
    writer.write(f"GET / HTTP/1.1\r\n{header}\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


async def test_sites_on_the_shared_http_port_are_routed_by_host() -> None:
    http = free_port_pair()
    with publishing_server("--publish-http", str(http)) as (server, _, _):
        async with asyncio.timeout(60):
            sites = [await asyncio.start_server(_site, "127.0.0.1", 0) for _ in range(2)]
            ports = [site.sockets[0].getsockname()[1] for site in sites]
            events: list[TunnelEvent] = []
            both = asyncio.Event()

            def sink(event: TunnelEvent) -> None:
                events.append(event)
                if len([e for e in events if isinstance(e, Published)]) == 2:
                    both.set()

            try:
                async with (
                    Peer(server, identity=Identity.generate(), name="bob", config=CONFIG) as bob,
                    Peer(
                        server, identity=Identity.generate(), name="carol", config=CONFIG
                    ) as carol,
                ):
                    sites_of = ((bob, ports[0], "a.example"), (carol, ports[1], "b.example"))
                    tasks = [
                        asyncio.ensure_future(
                            me.publish([(f"web=127.0.0.1:{port}", host)], on_event=sink)
                        )
                        for me, port, host in sites_of
                    ]
                    waiting = asyncio.ensure_future(both.wait())
                    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
                    for task in tasks:
                        if task.done():
                            task.result()  # (a refusal: raise it)
                    assert {e.public for e in events if isinstance(e, Published)} == {
                        f"a.example:{http}",
                        f"b.example:{http}",
                    }
                    assert (await _get(http, "a.example")).endswith(f"site on {ports[0]}".encode())
                    assert (await _get(http, f"B.example:{http}")).endswith(
                        f"site on {ports[1]}".encode()
                    )
                    assert (await _get(http, "c.example")).startswith(b"HTTP/1.1 404 ")
                    assert (await _get(http, None)).startswith(b"HTTP/1.1 400 ")
                    with pytest.raises(TunnelRefusedError, match=r"the site a\.example is taken"):
                        await carol.publish(
                            [(f"web=127.0.0.1:{ports[1]}", "a.example")], retry=False
                        )
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for site in sites:
                    site.close()
