"""asyncio adapter: the rendezvous's publish gateway (``rendezvous --publish-ports``),
itself a peer: publishers connect to it as to any peer (Noise-authenticated, encrypted,
on the data-plane transport; the server introduced it, and the server alone holds its
name), and ask with a PUBLISH stream for a public port, or with PUBLISH_HTTP for a site on
the shared HTTP port (``--publish-http``: routed by the Host of each connection's first
request, peer.tunnel.http_route). The gateway carries every outside connection (any TCP
or UDP client, no toolkit needed) to the owner, as ``peer forward`` would; the port or
site closes when the PUBLISH stream or the owner's connection ends (the owner went
offline, or stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
from typing import TYPE_CHECKING

import structlog

from peer.adapters.connection import Connection, Stream
from peer.adapters.tunnel_forward import carry
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import READ_LIMIT, TaskSet, read_header
from peer.adapters.tunnel_udp_forward import UdpForwarder
from peer.errors import PeerError
from peer.tunnel.events import EventSink, Side, TunnelRefused
from peer.tunnel.http_route import HostDecodeError, error_response, head_end, request_host
from peer.tunnel.policy import Refusal
from peer.tunnel.publishing import Publication, PublishConfig, PublishTable
from peer.tunnel.specs import ListenSpec, Protocol, TargetSpec, join_host_port
from peer.tunnel.wire import OpenReply, OpenRequest, OpenStatus, RequestKind

if TYPE_CHECKING:
    from peer.adapters.peer import Peer

log = structlog.get_logger()

REQUEST_TIMEOUT = 30.0
HEAD_TIMEOUT = 15.0  # an HTTP client that has not sent its request head by then is dropped
UDP_IDLE_TIMEOUT = 60.0


class Gateway:
    def __init__(
        self, me: Peer, config: PublishConfig, on_event: EventSink, links: TunnelLinks
    ) -> None:
        self._me = me
        self.table = PublishTable(config)
        self._emit = on_event
        self._links = links
        self._ids = itertools.count(1)
        self._tasks = TaskSet()

    async def run(self) -> None:
        """Serve publishers until cancelled."""
        self._me.screen_incoming(self._screen)
        config, http = self.table.config, None
        if config.http_port is not None:
            http = await asyncio.start_server(
                self._spawn_http, config.host, config.http_port, limit=READ_LIMIT, backlog=1024
            )
        try:
            while True:
                connection = await self._me.accept()
                self._links.offer(connection)
                self._tasks.spawn(self._serve_connection(connection))
        finally:
            self._me.screen_incoming(None)
            if http is not None:
                http.close()
            await self._tasks.close()

    def _screen(self, peer: str) -> str | None:
        allow = self.table.config.allow
        if allow is None or peer in allow:
            return None
        self._emit(TunnelRefused(Side.EXPOSE, 0, peer, "publish", "not allowed to publish"))
        return f"{peer} may not publish on this server"

    async def _serve_connection(self, connection: Connection) -> None:
        with contextlib.suppress(PeerError):
            while True:
                stream = await connection.accept_stream()
                self._tasks.spawn(self._publication(connection, stream))

    async def _publication(self, connection: Connection, stream: Stream) -> None:
        """One PUBLISH stream, from the request until the port closes."""
        try:
            request = OpenRequest.parse(await read_header(stream, REQUEST_TIMEOUT, "request"))
        except PeerError:
            stream.reset(2)
            stream.forget()
            return
        claimed = self.table.claim(connection.peer, request)
        if isinstance(claimed, Refusal):
            self._refuse(stream, connection.peer, claimed)
            return
        if claimed.site:
            await self._site(stream, claimed)
            return
        try:
            listener = await self._listen(claimed)
        except OSError as exc:
            self.table.release(claimed)
            taken = exc.errno == errno.EADDRINUSE
            status = OpenStatus.PORT_TAKEN if taken else OpenStatus.FAILED
            self._refuse(
                stream, connection.peer, Refusal(status, f"port {claimed.port}: {exc.strerror}")
            )
            return
        public = join_host_port(self._public_host(), claimed.port)
        stream.write(OpenReply(OpenStatus.OK, public).encode())
        log.info("published", owner=claimed.owner, service=claimed.service, public=public)
        try:
            await _until_ended(stream)
        finally:
            await listener.aclose()
            self.table.release(claimed)
            _end_publication(stream)
            log.info("unpublished", owner=claimed.owner, service=claimed.service, public=public)

    async def _site(self, stream: Stream, site: Publication) -> None:
        """An HTTP site on the shared port: routed from its first request on, until the
        PUBLISH stream ends."""
        stream.write(OpenReply(OpenStatus.OK, f"{site.site}:{site.port}").encode())
        log.info("published", owner=site.owner, service=site.service, site=site.site)
        try:
            await _until_ended(stream)
        finally:
            self.table.release(site)
            _end_publication(stream)
            log.info("unpublished", owner=site.owner, service=site.service, site=site.site)

    def _spawn_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.spawn(self._http_client(reader, writer))

    async def _http_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read the first request's head, find its site by Host, then carry the whole
        connection (that head first) to the site's owner."""
        head = b""
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                while (end := head_end(head)) is None:
                    chunk = await reader.read(65536)
                    if not chunk:
                        writer.close()
                        return
                    head += chunk
            host = request_host(head[:end])
        except HostDecodeError as exc:
            writer.write(error_response(exc.status, str(exc)))
            writer.close()
            return
        except (TimeoutError, OSError):
            writer.close()
            return
        site = self.table.site(host)
        if site is None:
            writer.write(error_response(404, f"no site {host} here"))
            writer.close()
            return
        await carry(
            self._links,
            site.owner,
            OpenRequest(RequestKind.SERVICE, site.service),
            reader,
            writer,
            emit=self._emit,
            tunnel=next(self._ids),
            service=site.service,
            early=head,
        )

    def _refuse(self, stream: Stream, peer: str, refusal: Refusal) -> None:
        self._emit(TunnelRefused(Side.EXPOSE, 0, peer, "publish", refusal.reason))
        with contextlib.suppress(PeerError):
            stream.write(OpenReply(refusal.status, refusal.reason).encode())
            stream.write_eof()
            stream.stop_reading(2)
        stream.forget()

    def _public_host(self) -> str:
        host = self.table.config.host
        if host in ("0.0.0.0", "::") and self._me.public_endpoint is not None:
            return self._me.public_endpoint[0]
        return host

    async def _listen(self, publication: Publication) -> _Listener:
        where = ListenSpec(self.table.config.host, publication.port)
        target = TargetSpec(publication.owner, publication.service)
        if publication.protocol is Protocol.UDP:
            udp = UdpForwarder(self._links, target, self._emit, self._ids, UDP_IDLE_TIMEOUT)
            await udp.start(where)
            return _Listener(udp=udp)

        tasks = TaskSet()

        def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks.spawn(
                carry(
                    self._links,
                    target.peer,
                    OpenRequest(RequestKind.SERVICE, target.service),
                    reader,
                    writer,
                    emit=self._emit,
                    tunnel=next(self._ids),
                    service=target.service,
                )
            )

        server = await asyncio.start_server(
            client, where.host, where.port, limit=READ_LIMIT, backlog=1024
        )
        return _Listener(tcp=server, tasks=tasks)


class _Listener:
    """A public port while it is published: its socket and the connections it carries."""

    def __init__(
        self,
        *,
        tcp: asyncio.Server | None = None,
        udp: UdpForwarder | None = None,
        tasks: TaskSet | None = None,
    ) -> None:
        self._tcp, self._udp, self._tasks = tcp, udp, tasks

    async def aclose(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            await self._udp.aclose()
        if self._tasks is not None:
            await self._tasks.close()


def _end_publication(stream: Stream) -> None:
    """Our side of a PUBLISH stream ends with the port (the publisher's has already)."""
    with contextlib.suppress(PeerError):
        stream.write_eof()
    stream.forget()


async def _until_ended(stream: Stream) -> None:
    """Until the publisher ends its PUBLISH stream, or its connection ends."""
    with contextlib.suppress(PeerError):
        while await stream.read(4096):
            pass
