"""asyncio adapter: the publishing side (``peer publish``, ``Peer.publish``). The peer
connects to the rendezvous's gateway (peer.adapters.tunnel_gateway), asks for each public
port (or HTTP site) on a PUBLISH stream it keeps open, then serves the gateway's streams
as an exposer that allows the gateway alone. When the connection ends (the gateway
restarted, the network moved), the gateway closes the ports; the publisher reconnects and
publishes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from peer.adapters.accept_queue import ConnectionRefused
from peer.adapters.connection import Connection, Stream
from peer.adapters.tunnel_expose import Exposer
from peer.adapters.tunnel_forward import answer_of
from peer.adapters.tunnel_links import TunnelLinks
from peer.adapters.tunnel_pipe import TunnelRefusedError, open_tunnel_stream
from peer.errors import PeerError
from peer.tunnel.events import EventSink, Published
from peer.tunnel.policy import ExposePolicy
from peer.tunnel.specs import ServiceSpec
from peer.tunnel.wire import OpenRequest, OpenStatus, RequestKind
from rvproto.names import GATEWAY_NAME

if TYPE_CHECKING:
    from peer.adapters.peer import Peer

log = structlog.get_logger()

RETRY_FIRST, RETRY_MAX = 1.0, 30.0


async def publish_until_cancelled(
    me: Peer,
    policy: ExposePolicy,
    pairs: list[tuple[ServiceSpec, int | str]],
    links: TunnelLinks,
    emit: EventSink,
    *,
    retry: bool,
) -> None:
    exposer = Exposer(me, policy, emit, links)
    delay = RETRY_FIRST
    while True:
        try:
            connection = await links.get(GATEWAY_NAME)
            published = await _publish_all(connection, pairs, emit)
        except (TunnelRefusedError, ConnectionRefused):
            raise  # (not allowed, a port taken: trying again changes nothing)
        except PeerError as exc:
            if not retry:
                raise
            log.warning("gateway_unreachable", reason=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        delay = RETRY_FIRST
        try:
            await exposer.serve(connection)
        finally:
            reason = connection.closed or "stopped"
            for (service, _), (public, stream) in zip(pairs, published, strict=True):
                _withdraw(stream)  # (the gateway frees the port at once, not at the close)
                emit(_event(service, public, open=False, reason=reason))
        if not retry:
            raise PeerError(f"the gateway closed the connection: {connection.closed}")


async def _publish_all(
    connection: Connection, pairs: list[tuple[ServiceSpec, int | str]], emit: EventSink
) -> list[tuple[str, Stream]]:
    """Each public port opened, or TunnelRefusedError for the first the gateway refuses
    (a port taken, outside the range, a peer not allowed to publish)."""
    published: list[tuple[str, Stream]] = []
    try:
        for service, where in pairs:
            published.append(await _publish_one(connection, service, where))
            emit(_event(service, published[-1][0]))
    except BaseException:
        for _, stream in published:  # all or none: a refused one withdraws the others
            _withdraw(stream)
        raise
    return published


async def _publish_one(
    connection: Connection, service: ServiceSpec, where: int | str
) -> tuple[str, Stream]:
    if isinstance(where, str):  # an HTTP site on the gateway's shared port
        name, what = f"{service.name}@{where}", f"the site {where}"
        request = OpenRequest(RequestKind.PUBLISH_HTTP, name, protocol=service.protocol)
    else:
        what = f"public {service.protocol.value} port {where}"
        request = OpenRequest(RequestKind.PUBLISH, service.name, where, service.protocol)
    stream, reply_of = await open_tunnel_stream(connection, request)
    try:
        reply = await answer_of(connection, reply_of)
    except BaseException:
        _withdraw(stream)
        raise
    if reply.status is not OpenStatus.OK:
        _withdraw(stream)
        raise TunnelRefusedError(f"the server refused {what}: {reply.reason}")
    return reply.reason, stream


def _withdraw(stream: Stream) -> None:
    """End a PUBLISH stream both ways: the gateway closes that port or site now."""
    with contextlib.suppress(PeerError):
        stream.reset()
    stream.forget()


def _event(service: ServiceSpec, public: str, *, open: bool = True, reason: str = "") -> Published:
    port = int(public.rpartition(":")[2] or 0)
    return Published(service.name, port, service.protocol.value, public, open, reason)
