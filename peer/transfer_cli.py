"""``peer send`` and ``peer receive``: files between peers, one stream per file (the
protocol is peer.transfer's, one file over one stream peer.transfer_streams').

    peer send a.iso notes.txt --to bob      # the files one after another; 0 when all got ok
    peer receive --dir ~/incoming           # one connection after another, until stopped

Status lines (and, on a terminal, a progress bar updated in place) go to stderr. With
``--json``, stdout carries one object per line: ``online``, ``connected``, ``progress``
(``file``, ``bytes``, ``total``, ``rate`` in bytes/s, ``eta`` in s), ``file-done``,
``error``, ``refused`` (a sender other than ``--from``), ``closed``, ``stopped``. A name
that exists on the receiver is kept and the new file saved as ``NAME (1)``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from natprobe.report import NatType
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import LocalProtocolError, PeerError
from peer.events import PathKind
from peer.identity import Identity
from peer.known_peers import KnownPeers
from peer.startup import Transport
from peer.transfer import Offer, Verdict
from peer.transfer_progress import Progress, format_bytes, progress_line
from peer.transfer_streams import (
    FileNotReceived,
    TransferStream,
    failure_reason,
    receive_file,
    send_file,
    settle,
)
from stunproto.attributes import Address


class TransferConnection(Protocol):
    """What a transfer needs of a connection (peer.adapters.connection.Connection)."""

    @property
    def peer(self) -> str: ...
    @property
    def closed(self) -> str | None: ...
    @property
    def path(self) -> PathKind: ...
    @property
    def remote(self) -> Address: ...
    @property
    def connect_time(self) -> float: ...
    @property
    def note(self) -> str: ...
    async def open_stream(self) -> TransferStream: ...
    async def accept_stream(self) -> TransferStream: ...
    async def close(self) -> None: ...


class TransferPeer(Protocol):
    """What a transfer needs of a peer that is online (peer.adapters.peer.Peer)."""

    @property
    def name(self) -> str: ...
    @property
    def identity(self) -> Identity: ...
    @property
    def public_endpoint(self) -> Address | None: ...
    @property
    def nat_type(self) -> NatType: ...
    @property
    def transport(self) -> Transport: ...
    async def connect(self, name: str, timeout: float = 30.0) -> TransferConnection: ...
    async def accept(self) -> TransferConnection: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSettings:
    server: Address
    name: str
    identity: Identity
    known_peers: KnownPeers | None
    peer_config: PeerConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class SendOptions:
    peer: PeerSettings
    to: str
    files: tuple[Path, ...]
    json: bool
    connect_timeout: float = 30.0
    progress_bar: bool | None = None  # None: when stderr is a terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveOptions:
    peer: PeerSettings
    directory: Path
    from_peer: str | None = None  # refuse connections from anyone else
    json: bool
    progress_bar: bool | None = None


OpenPeer = Callable[[PeerSettings], AbstractAsyncContextManager[TransferPeer]]


def open_peer(settings: PeerSettings) -> AbstractAsyncContextManager[TransferPeer]:
    return Peer(
        settings.server,
        identity=settings.identity,
        name=settings.name,
        known_peers=settings.known_peers,
        config=settings.peer_config,
    )


def online_line(me: TransferPeer) -> tuple[str, dict[str, str]]:
    """The status line of a peer that has logged in, and its JSON fields."""
    public = f"{me.public_endpoint[0]}:{me.public_endpoint[1]}" if me.public_endpoint else "-"
    text = (
        f"online as {me.name} ({me.identity.fingerprint}), public {public}, "
        f"NAT {me.nat_type}, via {me.transport}"
    )
    fields = {
        "name": me.name,
        "public": public,
        "nat_type": str(me.nat_type),
        "transport": str(me.transport),
    }
    return text, fields


class _Reporter:
    """Status lines and the progress bar to stderr, or JSON lines to stdout."""

    def __init__(self, json_mode: bool, progress_bar: bool | None) -> None:
        self.json = json_mode
        bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.bar = bar and not json_mode
        self._bar_width = 0  # of the progress line on screen, 0 when there is none

    def event(self, event: str, text: str, **fields: Any) -> None:
        if self.json:
            print(json.dumps({"event": event, **fields}), flush=True)
            return
        if self._bar_width:  # a status line replaces the bar; the next step redraws it
            sys.stderr.write("\r" + " " * self._bar_width + "\r")
            self._bar_width = 0
        print(text, file=sys.stderr, flush=True)

    def progress(self, peer: str, name: str, progress: Progress) -> None:
        if self.json:
            rate = None if progress.rate is None else round(progress.rate)
            eta = None if progress.eta is None else round(progress.eta, 1)
            fields = {"peer": peer, "file": name, "bytes": progress.done, "total": progress.total}
            print(json.dumps({"event": "progress", **fields, "rate": rate, "eta": eta}), flush=True)
        elif self.bar:
            line = progress_line(name, progress)
            sys.stderr.write("\r" + line.ljust(self._bar_width))
            sys.stderr.flush()
            self._bar_width = len(line)

    def online(self, me: TransferPeer) -> None:
        text, fields = online_line(me)
        self.event("online", text, **fields)

    def connected(self, conn: TransferConnection) -> None:
        remote = f"{conn.remote[0]}:{conn.remote[1]}"
        self.event(
            "connected",
            f"connected to {conn.peer} over {conn.path} path, remote {remote}, "
            f"in {conn.connect_time * 1000:.0f} ms" + (f" ({conn.note})" if conn.note else ""),
            peer=conn.peer,
            path=str(conn.path),
            remote=remote,
            ms=round(conn.connect_time * 1000, 1),
        )

    def failed(self, text: str, reason: str, **fields: Any) -> None:
        self.event("error", f"peer: {text}", reason=reason, **fields)


def _speed(size: int, seconds: float) -> str:
    return f"{format_bytes(size / seconds)}/s" if seconds > 0 else "-"


# ---------------------------------------------------------------------------- send


def offer_for(path: Path) -> Offer:
    """The offer for a local file; a one-line LocalProtocolError for one that cannot go."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise LocalProtocolError(f"{path}: not a regular file")
        with path.open("rb"):
            pass  # readable: refused now rather than after connecting
    except OSError as exc:
        raise LocalProtocolError(f"{path}: {exc.strerror or exc}") from None
    return Offer(path.name, status.st_size, stat.S_IMODE(status.st_mode))


async def run_send(options: SendOptions, *, open_peer: OpenPeer = open_peer) -> int:
    """0 when every file got an ok verdict; 1 when any did not or the peer failed; 2 for a
    file that cannot be sent at all (checked before connecting)."""
    out = _Reporter(options.json, options.progress_bar)
    try:
        files = [(path, offer_for(path)) for path in options.files]
    except LocalProtocolError as exc:
        out.failed(str(exc), str(exc))
        return 2
    try:
        async with open_peer(options.peer) as me:
            out.online(me)
            conn = await me.connect(options.to, timeout=options.connect_timeout)
            out.connected(conn)
            failures = await send_files(conn, files, out)
            await conn.close()
            return 1 if failures else 0
    except (PeerError, TimeoutError) as exc:
        reason = failure_reason(exc)
        out.failed(reason, reason)
        return 1


async def send_files(
    conn: TransferConnection, files: Sequence[tuple[Path, Offer]], out: _Reporter
) -> int:
    """Each file on its own stream, one after another; how many were not delivered."""
    loop = asyncio.get_running_loop()
    failures = 0
    for index, (path, offer) in enumerate(files):
        started = loop.time()
        try:
            stream = await conn.open_stream()
            progress = functools.partial(out.progress, conn.peer, offer.name)
            verdict, sha256 = await send_file(stream, path, offer, progress)
        except (PeerError, OSError, TimeoutError) as exc:
            verdict, sha256 = Verdict.refused(failure_reason(exc)), ""
        if verdict.ok:
            seconds = loop.time() - started
            out.event(
                "file-done",
                f"sent {offer.name} to {conn.peer}: {format_bytes(offer.size)} in "
                f"{seconds:.1f} s ({_speed(offer.size, seconds)}), saved as {verdict.saved_as}",
                peer=conn.peer,
                file=offer.name,
                bytes=offer.size,
                sha256=sha256,
                saved_as=verdict.saved_as,
            )
            continue
        failures += 1
        text = f"{offer.name}: not delivered to {conn.peer}: {verdict.reason}"
        out.failed(text, verdict.reason, peer=conn.peer, file=offer.name)
        if conn.closed is not None:  # nothing more can go: say so for each file left
            reason = f"not sent: the connection closed ({conn.closed})"
            for _, later in files[index + 1 :]:
                out.failed(f"{later.name}: {reason}", reason, peer=conn.peer, file=later.name)
            return failures + len(files) - index - 1
    return failures


# ---------------------------------------------------------------------------- receive


async def run_receive(
    options: ReceiveOptions, *, open_peer: OpenPeer = open_peer, stop: asyncio.Event | None = None
) -> int:
    """Receive until ``stop`` is set (without one: until cancelled, which the CLI does on
    SIGINT and SIGTERM, logging in or not): 0 when stopped, 1 when the peer fails, 2 for
    a directory it cannot write to."""
    out = _Reporter(options.json, options.progress_bar)
    directory = options.directory
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        reason = f"{directory}: not a writable directory"
        out.failed(reason, reason)
        return 2
    try:
        async with open_peer(options.peer) as me:
            out.online(me)
            await _Receiver(options, out).serve(me, stop or asyncio.Event())
    except (PeerError, TimeoutError) as exc:
        reason = failure_reason(exc)
        out.failed(reason, reason)
        return 1
    except asyncio.CancelledError:
        if stop is not None:
            raise  # (a caller's own cancellation, not the way to stop)
        # Stopped: the normal end (the peer closed on the way out, files under way with it).
    out.event("stopped", "stopped", reason="stopped")
    return 0


def _umask() -> int:
    mask = os.umask(0o077)  # (the only way to read it is to set it)
    os.umask(mask)
    return mask


class _Receiver:
    """Connections one after another or at once, several files each, until stopped; the
    tasks of files under way end with it, and their part files with them."""

    def __init__(self, options: ReceiveOptions, out: _Reporter) -> None:
        self.directory = options.directory
        self.from_peer = options.from_peer
        self.out = out
        self.umask = _umask()

    async def serve(self, me: TransferPeer, stop: asyncio.Event) -> None:
        connections: set[asyncio.Future[None]] = set()

        async def accept_forever() -> None:
            while True:
                conn = await me.accept()
                if self.from_peer is not None and conn.peer != self.from_peer:
                    reason = f"refused a connection from {conn.peer} (expecting {self.from_peer})"
                    self.out.event("refused", reason, peer=conn.peer, reason=reason)
                    await conn.close()
                    continue
                self.out.connected(conn)
                task = asyncio.ensure_future(self.serve_connection(conn))
                connections.add(task)
                task.add_done_callback(connections.discard)

        accepting = asyncio.ensure_future(accept_forever())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({accepting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if accepting.done():
                accepting.result()  # it ends only by an error: raise it
        finally:
            await settle(accepting, stopping, *connections)

    async def serve_connection(self, conn: TransferConnection) -> None:
        files: set[asyncio.Future[None]] = set()
        try:
            while True:
                try:
                    stream = await conn.accept_stream()
                except PeerError:
                    break  # the connection closed
                task = asyncio.ensure_future(self.receive(conn.peer, stream))
                files.add(task)
                task.add_done_callback(files.discard)
            await asyncio.gather(*files, return_exceptions=True)  # each reports its own end
        finally:
            await settle(*files)
        reason = conn.closed or "closed"
        self.out.event("closed", f"{conn.peer}: closed: {reason}", peer=conn.peer, reason=reason)

    async def receive(self, peer: str, stream: TransferStream) -> None:
        receiving: list[str] = []  # the file's name, once its offer came

        def progress(name: str, progress: Progress) -> None:
            receiving[:] = [name]
            self.out.progress(peer, name, progress)

        try:
            received = await receive_file(stream, self.directory, self.umask, progress)
        except asyncio.CancelledError:  # stopped mid-file: its part file is gone, say so
            if receiving:
                text = f"{receiving[0]} from {peer}: not saved: stopped"
                self.out.failed(text, "stopped", peer=peer, file=receiving[0])
            raise
        except FileNotReceived as exc:
            what = f"{exc.name} from {peer}" if exc.name else f"a file from {peer}"
            text = f"{what}: not saved: {exc.reason}"
            self.out.failed(text, exc.reason, peer=peer, file=exc.name)
            return
        name, size = received.offer.name, received.offer.size
        self.out.event(
            "file-done",
            f"received {name} from {peer}: {format_bytes(size)} in {received.seconds:.1f} s "
            f"({_speed(size, received.seconds)}) -> {received.path}",
            peer=peer,
            file=name,
            bytes=size,
            sha256=received.sha256,
            saved_as=str(received.path),
        )
