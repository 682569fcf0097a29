"""``peer chat``: a line chat over the punched, encrypted channel.

Each stdin line is one message. Received messages print as ``NAME: text`` (or, with
``--json``, one JSON object per line: online, connected, message, path, closed, error).
Status lines go to stderr. On stdin EOF, pending messages are delivered, then it exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from peer.adapters.peer import Connection, Peer, PeerConfig
from peer.errors import PeerError
from peer.events import Offline, Online, PathChanged
from peer.identity import Identity
from peer.known_peers import KnownPeers
from stunproto.attributes import Address


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatOptions:
    server: Address
    name: str
    to: str | None
    identity: Identity
    known_peers: KnownPeers | None
    json: bool
    peer_config: PeerConfig
    connect_timeout: float = 30.0


class _Output:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode

    def event(self, event: str, text: str, **fields: Any) -> None:
        if self.json:
            print(json.dumps({"event": event, **fields}), flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def message(self, sender: str, text: str) -> None:
        if self.json:
            print(json.dumps({"event": "message", "from": sender, "text": text}), flush=True)
        else:
            print(f"{sender}: {text}", flush=True)


def _endpoint(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _online(me: Peer, out: _Output, public: Address) -> None:
    """The online line: at start, and each time the peer is back online (one format)."""
    out.event(
        "online",
        f"online as {me.name} ({me.identity.fingerprint}), public "
        f"{_endpoint(public)}, NAT {me.nat_type}, via {me.transport}",
        name=me.name,
        public=_endpoint(public),
        nat_type=str(me.nat_type),
        transport=str(me.transport),
    )


def _status(me: Peer, out: _Output, event: object) -> None:
    """Online and offline lines for the rendezvous registration; other events are not
    status lines."""
    if isinstance(event, Online):
        _online(me, out, event.public_endpoint)
    elif isinstance(event, Offline):
        out.event(
            "offline",
            f"offline: {event.reason}; logging in again in {event.retry_in:.1f} s",
            reason=event.reason,
            retry_in=round(event.retry_in, 1),
        )


async def _watch_status(me: Peer, out: _Output) -> None:
    while True:
        _status(me, out, await me.events.get())


async def run_chat(options: ChatOptions) -> int:
    out = _Output(options.json)
    try:
        async with Peer(
            options.server,
            identity=options.identity,
            name=options.name,
            known_peers=options.known_peers,
            config=options.peer_config,
        ) as me:
            assert me.public_endpoint is not None
            _online(me, out, me.public_endpoint)
            # Waiting (for bob, maybe hours): the registration may come and go meanwhile.
            waiting = asyncio.ensure_future(_watch_status(me, out))
            try:
                if options.to is not None:
                    conn = await me.connect(options.to, timeout=options.connect_timeout)
                else:
                    conn = await me.accept()
            finally:
                waiting.cancel()
            out.event(
                "connected",
                f"connected to {conn.peer} over {conn.path} path, remote "
                f"{_endpoint(conn.remote)}, in {conn.connect_time * 1000:.0f} ms"
                + (f" ({conn.note})" if conn.note else ""),
                peer=conn.peer,
                path=str(conn.path),
                remote=_endpoint(conn.remote),
                ms=round(conn.connect_time * 1000, 1),
                **({"note": conn.note} if conn.note else {}),
            )
            return await _converse(me, conn, out)
    except (PeerError, TimeoutError) as exc:
        out.event("error", f"peer: {exc or 'timed out'}", reason=str(exc) or "timed out")
        return 1


async def _converse(me: Peer, conn: Connection, out: _Output) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def receive() -> None:
        async for data in conn:
            out.message(conn.peer, data.decode(errors="replace"))

    async def watch_paths() -> None:
        while True:
            event = await me.events.get()
            _status(me, out, event)
            if isinstance(event, PathChanged) and event.peer == conn.peer:
                out.event(
                    "path",
                    f"path to {conn.peer} is now {event.path}, remote {_endpoint(event.remote)}",
                    path=str(event.path),
                    remote=_endpoint(event.remote),
                )

    receiving = asyncio.ensure_future(receive())
    watching = asyncio.ensure_future(watch_paths())
    try:
        while conn.closed is None:
            line_task = asyncio.ensure_future(reader.readline())
            done, _ = await asyncio.wait(
                {line_task, receiving}, return_when=asyncio.FIRST_COMPLETED
            )
            if line_task not in done:
                line_task.cancel()
                break  # the connection closed under us
            line = line_task.result()
            if not line:  # EOF: deliver what is pending, then leave
                await conn.drain()
                await conn.close()
                out.event("closed", "closed: end of input", reason="end of input")
                return 0
            await conn.send(line.rstrip(b"\r\n"))
        reason = conn.closed or "closed"
        out.event("closed", f"closed: {reason}", reason=reason)
        return 0 if reason.startswith("closed by") else 1
    finally:
        receiving.cancel()
        watching.cancel()
