"""``peer send`` / ``peer receive`` (peer.transfer_cli over peer.transfer_streams) against
an in-memory connection that implements the stream API the transfer codes against: bytes
in asyncio-woken buffers with a small limit, so that ``drain`` really waits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from natlab.services import chat_args, rendezvous_process, wait_for_line
from natprobe.report import NatType
from peer.adapters.peer import PeerConfig
from peer.errors import PeerError
from peer.events import PathKind
from peer.identity import Identity
from peer.startup import Transport
from peer.transfer import FRAME_PREFIX, Offer, OutgoingFile, Verdict, frame, payload_length
from peer.transfer_cli import (
    OpenPeer,
    PeerSettings,
    ReceiveOptions,
    SendOptions,
    run_receive,
    run_send,
)
from tests.support.loopback import free_port_pair

TIMEOUT = 10.0
LIMIT = 64 * 1024  # the fake's send buffer: far below the files sent, so drain waits


# ---------------------------------------------------------------- the fake stream API


class Pipe:
    """One direction of a stream."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.reset_code: int | None = None  # the writer abandoned it
        self.stopped: int | None = None  # the reader asked the writer to stop
        self.written = 0


class FakeStream:
    def __init__(self, conn: FakeConnection, stream_id: int, out: Pipe, into: Pipe) -> None:
        self.conn, self.stream_id, self._out, self._in = conn, stream_id, out, into

    def _check_writable(self) -> None:
        if self.conn.closed is not None:
            raise PeerError(f"connection to {self.conn.peer} closed: {self.conn.closed}")
        if self._out.stopped is not None or self._out.reset_code is not None:
            raise PeerError(f"stream {self.stream_id}: stopped (code {self._out.stopped})")

    def write(self, data: bytes) -> None:
        self._check_writable()
        assert not self._out.eof, "write after write_eof"
        chunk = bytearray(data)
        corrupt = self.conn.corrupt_offset
        if corrupt is not None and self._out.written <= corrupt < self._out.written + len(chunk):
            chunk[corrupt - self._out.written] ^= 0xFF
        self._out.buffer += chunk
        self._out.written += len(chunk)
        self.conn.hub.sent += len(chunk)
        self.conn.hub.notify()
        if self.conn.hub.drop_after is not None and self.conn.hub.sent >= self.conn.hub.drop_after:
            self.conn.hub.drop("connection lost: no answer from the peer")

    async def drain(self) -> None:
        while True:
            self._check_writable()
            if len(self._out.buffer) < LIMIT:
                return
            self.conn.hub.drain_waits += 1
            await self.conn.hub.changed()

    async def read(self, n: int = -1) -> bytes:
        while True:
            if self._in.reset_code is not None:
                raise PeerError(f"stream {self.stream_id} reset by the peer")
            if self._in.buffer:
                take = len(self._in.buffer) if n < 0 else n
                data = bytes(self._in.buffer[:take])
                del self._in.buffer[:take]
                self.conn.hub.notify()
                return data
            if self._in.eof:
                return b""
            if self.conn.closed is not None:
                raise PeerError(f"connection to {self.conn.peer} closed: {self.conn.closed}")
            await self.conn.hub.changed()

    async def readexactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await self.read(n - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(data, n)
            data += chunk
        return data

    def write_eof(self) -> None:
        self._check_writable()
        self._out.eof = True
        self.conn.hub.notify()

    async def close(self) -> None:
        if not self._out.eof:
            self.write_eof()
        while self._out.buffer:  # "acknowledged": the peer has read it all
            if self.conn.closed is not None:
                raise PeerError("closed before the peer had everything")
            await self.conn.hub.changed()

    def reset(self, code: int = 0) -> None:
        self._out.reset_code, self._in.stopped = code, code
        self._out.buffer.clear()
        self._in.buffer.clear()
        self.conn.hub.notify()


class Hub:
    """A connection's two ends and what they share: the wake-up, the knobs."""

    def __init__(self, *, drop_after: int | None = None) -> None:
        self._event = asyncio.Event()
        self.ends: list[FakeConnection] = []
        self.sent = 0
        self.drain_waits = 0
        self.drop_after = drop_after

    def notify(self) -> None:
        self._event.set()

    async def changed(self) -> None:
        self._event.clear()
        await self._event.wait()

    def drop(self, reason: str) -> None:
        for end in self.ends:
            if end.closed is None:
                end.closed = reason
            end.incoming.put_nowait(None)
        self.notify()


class FakeConnection:
    path = PathKind.DIRECT
    remote = ("192.0.2.7", 4242)
    connect_time = 0.004
    note = ""

    def __init__(self, hub: Hub, me: str, peer: str, corrupt_offset: int | None = None) -> None:
        self.hub, self.me, self.peer = hub, me, peer
        self.corrupt_offset = corrupt_offset  # flip the byte at this offset of every stream
        self.closed: str | None = None
        self.incoming: asyncio.Queue[FakeStream | None] = asyncio.Queue()
        self.other: FakeConnection | None = None
        self._next_id = 0
        hub.ends.append(self)

    async def open_stream(self) -> FakeStream:
        assert self.other is not None
        if self.closed is not None:
            raise PeerError(f"connection to {self.peer} closed: {self.closed}")
        there, back = Pipe(), Pipe()
        self._next_id += 4
        self.other.incoming.put_nowait(FakeStream(self.other, self._next_id, back, there))
        return FakeStream(self, self._next_id, there, back)

    async def accept_stream(self) -> FakeStream:
        stream = await self.incoming.get()
        if stream is None:
            self.incoming.put_nowait(None)
            raise PeerError(f"connection to {self.peer} closed: {self.closed}")
        return stream

    async def close(self) -> None:
        assert self.other is not None
        if self.closed is None:
            self.closed, self.other.closed = "closed", f"closed by {self.me}"
            self.hub.drop("closed")


class Network:
    def __init__(self) -> None:
        self.peers: dict[str, FakePeer] = {}
        self.hubs: list[Hub] = []
        self.drop_after: int | None = None
        self.corrupt_offset: int | None = None

    def open(self, settings: PeerSettings) -> FakePeer:
        return FakePeer(self, settings.name)

    def pair(self, initiator: str, responder: str) -> tuple[FakeConnection, FakeConnection]:
        hub = Hub(drop_after=self.drop_after)
        self.hubs.append(hub)
        mine = FakeConnection(hub, initiator, responder, self.corrupt_offset)
        theirs = FakeConnection(hub, responder, initiator)
        mine.other, theirs.other = theirs, mine
        return mine, theirs


class FakePeer:
    nat_type = NatType.FULL_CONE
    transport = Transport.UDP
    public_endpoint = ("198.51.100.1", 40000)

    def __init__(self, network: Network, name: str) -> None:
        self.network, self.name = network, name
        self.identity = Identity.generate()
        self.accepted: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self.connects = 0

    async def __aenter__(self) -> FakePeer:
        self.network.peers[self.name] = self
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.network.peers.pop(self.name, None)

    async def connect(self, name: str, timeout: float = 30.0) -> FakeConnection:
        self.connects += 1
        if name not in self.network.peers:
            raise PeerError(f"{name} is unknown or offline")
        mine, theirs = self.network.pair(self.name, name)
        self.network.peers[name].accepted.put_nowait(theirs)
        return mine

    async def accept(self) -> FakeConnection:
        return await self.accepted.get()


# ---------------------------------------------------------------- helpers


def settings(name: str) -> PeerSettings:
    return PeerSettings(
        server=("127.0.0.1", 3478),
        name=name,
        identity=Identity.generate(),
        known_peers=None,
        peer_config=PeerConfig(probe_nat=False),
    )


def opener(network: Network) -> OpenPeer:
    return network.open


class EventLog:
    """Stands in for stdout: the JSON lines printed so far, and a wake-up per write."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.text = ""
        self._written = asyncio.Event()
        self._monkeypatch = monkeypatch

    def install(self) -> None:
        """In the test itself: pytest's capture sets sys.stdout after the fixtures ran."""
        if sys.stdout is not self:
            self._monkeypatch.setattr(sys, "stdout", self)

    def write(self, text: str) -> int:
        self.text += text
        self._written.set()
        return len(text)

    def flush(self) -> None:
        pass

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.text.splitlines()]
        assert all(isinstance(event, dict) and "event" in event for event in parsed)
        return [event for event in parsed if kind is None or event["event"] == kind]

    async def wait_for(self, kind: str, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for event in self.events(kind):
                    if all(event.get(key) == value for key, value in fields.items()):
                        return event
                self._written.clear()
                await self._written.wait()


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> EventLog:
    return EventLog(monkeypatch)


@asynccontextmanager
async def receiver(
    network: Network, directory: Path, log: EventLog, **options: Any
) -> AsyncIterator[asyncio.Task[int]]:
    """``peer receive`` as bob, online before the block runs, stopped after it."""
    log.install()
    stop = asyncio.Event()
    task = asyncio.ensure_future(
        run_receive(
            ReceiveOptions(peer=settings("bob"), directory=directory, json=True, **options),
            open_peer=opener(network),
            stop=stop,
        )
    )
    await log.wait_for("online", name="bob")
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(task, return_exceptions=True)


async def send(network: Network, files: list[Path], name: str = "alice", **options: Any) -> int:
    send_options = SendOptions(
        peer=settings(name), to="bob", files=tuple(files), json=True, **options
    )
    async with asyncio.timeout(TIMEOUT):
        return await run_send(send_options, open_peer=opener(network))


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


def make(directory: Path, name: str, size: int, seed: int = 0) -> Path:
    path = directory / name
    path.write_bytes(hashlib.shake_256(f"{name}{seed}".encode()).digest(size) if size else b"")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir()
    inbox.mkdir()
    return outbox, inbox


# ---------------------------------------------------------------- tests


async def test_several_files_arrive_whole(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    files = [
        make(outbox, "empty", 0),
        make(outbox, "notes v2.txt", 1000),
        make(outbox, "big.bin", 700_000),
    ]
    files[1].chmod(0o750)
    network = Network()
    async with receiver(network, inbox, log) as receiving:
        assert await send(network, files) == 0
        assert network.hubs[0].drain_waits > 0  # the sender waited for the receiver
    assert receiving.result() == 0
    for path in files:
        assert (inbox / path.name).read_bytes() == path.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert (inbox / "notes v2.txt").stat().st_mode & 0o777 == 0o750 & ~umask
    assert leftovers(inbox) == []
    done = log.events("file-done")
    sent = {e["file"]: e for e in done if e["peer"] == "bob"}
    received = {e["file"]: e for e in done if e["peer"] == "alice"}
    assert set(sent) == set(received) == {path.name for path in files}
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sent[path.name]["sha256"] == received[path.name]["sha256"] == digest
        assert received[path.name]["saved_as"] == str(inbox / path.name)


async def test_a_corrupt_byte_is_a_hash_mismatch(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    path = make(outbox, "data.bin", 200_000)
    network = Network()
    network.corrupt_offset = len(Offer("data.bin", 200_000).encode()) + 150_000  # in the body
    async with receiver(network, inbox, log):
        assert await send(network, [path]) == 1
    assert list(inbox.iterdir()) == []  # neither the file nor its part file
    errors = log.events("error")
    assert {e["peer"] for e in errors} == {"alice", "bob"}  # both sides say so
    assert all("SHA-256 mismatch" in e["reason"] and e["file"] == "data.bin" for e in errors)


async def test_a_connection_lost_mid_file(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    files = [make(outbox, "first.bin", 1_000_000), make(outbox, "second.bin", 10)]
    network = Network()
    network.drop_after = 300_000
    async with receiver(network, inbox, log) as receiving:
        assert await send(network, files) == 1
    assert receiving.result() == 0  # the receiver goes on after a lost connection
    assert list(inbox.iterdir()) == []
    out = log.events()
    errors = [e for e in out if e["event"] == "error"]
    mine = [e for e in errors if e["peer"] == "bob"]
    assert [e["file"] for e in mine] == ["first.bin", "second.bin"]
    assert "connection lost" in mine[0]["reason"] and "not sent" in mine[1]["reason"]
    theirs = [e for e in errors if e["peer"] == "alice"]
    assert len(theirs) == 1 and "connection lost" in theirs[0]["reason"]
    (closed,) = [e for e in out if e["event"] == "closed"]
    assert closed["peer"] == "alice" and "connection lost" in closed["reason"]


async def test_an_existing_file_is_never_overwritten(
    dirs: tuple[Path, Path], log: EventLog
) -> None:
    outbox, inbox = dirs
    path = make(outbox, "report.pdf", 5000)
    (inbox / "report.pdf").write_bytes(b"the old one")
    network = Network()
    async with receiver(network, inbox, log):
        assert await send(network, [path]) == 0
        assert await send(network, [path]) == 0
    assert (inbox / "report.pdf").read_bytes() == b"the old one"
    assert (inbox / "report (1).pdf").read_bytes() == path.read_bytes()
    assert (inbox / "report (2).pdf").read_bytes() == path.read_bytes()
    done = log.events("file-done")
    assert [e["saved_as"] for e in done if e["peer"] == "bob"] == [
        "report (1).pdf",
        "report (2).pdf",
    ]


async def test_json_progress_is_well_formed(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    path = make(outbox, "movie.mkv", 2_000_000)
    network = Network()
    async with receiver(network, inbox, log):
        assert await send(network, [path]) == 0
    out = log.events()
    assert [e["event"] for e in out][:2] == ["online", "online"]
    assert sum(e["event"] == "connected" for e in out) == 2
    for side in ("alice", "bob"):
        steps = [e for e in out if e["event"] == "progress" and e["peer"] == side]
        assert steps, side
        assert set(steps[0]) == {"event", "peer", "file", "bytes", "total", "rate", "eta"}
        assert all(e["file"] == "movie.mkv" and e["total"] == 2_000_000 for e in steps)
        sizes = [e["bytes"] for e in steps]
        assert sizes == sorted(sizes) and sizes[0] == 0 and sizes[-1] == 2_000_000
        assert all(e["rate"] is None or isinstance(e["rate"], int) for e in steps)
        assert all(e["eta"] is None or e["eta"] >= 0 for e in steps)
        assert steps[-1]["eta"] == 0


async def test_from_refuses_other_senders(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    path = make(outbox, "a.txt", 100)
    network = Network()
    async with receiver(network, inbox, log, from_peer="carol"):
        assert await send(network, [path], name="mallory") == 1
        assert await send(network, [path], name="carol") == 0
    assert [p.name for p in inbox.iterdir()] == ["a.txt"]
    refused = log.events("refused")
    assert len(refused) == 1 and refused[0]["peer"] == "mallory"


async def test_several_senders_at_once(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, inbox = dirs
    files = [make(outbox, f"from-{name}.bin", 300_000, seed=i) for i, name in enumerate("abc")]
    network = Network()
    async with receiver(network, inbox, log):
        codes = await asyncio.gather(*(send(network, [f], name=f.stem) for f in files))
    assert codes == [0, 0, 0]
    assert all((inbox / f.name).read_bytes() == f.read_bytes() for f in files)


def raw_connection(network: Network) -> FakeConnection:
    """A connection from a hand-made sender to bob, for what a real one would never send."""
    mine, theirs = network.pair("eve", "bob")
    network.peers["bob"].accepted.put_nowait(theirs)
    return mine


async def read_verdict(stream: FakeStream) -> Verdict:
    async with asyncio.timeout(TIMEOUT):
        prefix = await stream.readexactly(FRAME_PREFIX.size)
        return Verdict.parse(await stream.readexactly(payload_length(prefix)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(b'{"name": "../escape", "size": 3}') + b"abc" + bytes(32), "path separator"),
        (frame(b'{"name": "..", "size": 0}') + bytes(32), "directory reference"),
        (frame(b"\xff" * 10), "not JSON"),
        (OutgoingFile(Offer("short", 100)).header() + b"x" * 50, "short file"),
    ],
)
async def test_bad_streams_are_refused_with_a_reason(
    dirs: tuple[Path, Path], data: bytes, reason: str, log: EventLog
) -> None:
    _, inbox = dirs
    network = Network()
    async with receiver(network, inbox, log):
        stream = await raw_connection(network).open_stream()
        stream.write(data)
        stream.write_eof()
        verdict = await read_verdict(stream)
    assert not verdict.ok and reason in verdict.reason
    assert list(inbox.iterdir()) == []
    (error,) = log.events("error")
    assert reason in error["reason"] and error["peer"] == "eve"


async def test_a_reset_or_a_stop_mid_file_leaves_no_part_file(
    dirs: tuple[Path, Path], log: EventLog
) -> None:
    _, inbox = dirs
    network = Network()
    async with receiver(network, inbox, log):
        conn = raw_connection(network)
        first, second = await conn.open_stream(), await conn.open_stream()
        for stream in (first, second):
            stream.write(OutgoingFile(Offer("half.bin", 1000)).header() + b"x" * 400)
        async with asyncio.timeout(TIMEOUT):  # until the receiver has read what was sent
            while first._out.buffer or second._out.buffer:
                await conn.hub.changed()
        assert len(leftovers(inbox)) == 2
        first.reset(1)
        error = await log.wait_for("error", peer="eve")
        assert "reset" in error["reason"] and error["file"] == "half.bin"
        assert len(leftovers(inbox)) == 1
    assert list(inbox.iterdir()) == []  # stopping removed the other one


async def test_files_that_cannot_be_sent_fail_before_connecting(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    outbox, _ = dirs
    network = Network()
    peers: list[FakePeer] = []

    def open_and_keep(options: PeerSettings) -> FakePeer:
        peers.append(network.open(options))
        return peers[-1]

    for bad in (outbox / "missing.txt", outbox, outbox / "bad\nname"):
        if bad.name.startswith("bad"):
            bad.write_bytes(b"x")
        options = SendOptions(peer=settings("alice"), to="bob", files=(bad,), json=False)
        async with asyncio.timeout(TIMEOUT):
            assert await run_send(options, open_peer=open_and_keep) == 2
    assert peers == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("peer: ") for line in lines)
    assert "No such file" in lines[0] and "not a regular file" in lines[1]
    assert "control characters" in lines[2]


async def test_an_unwritable_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = Network()
    options = ReceiveOptions(peer=settings("bob"), directory=tmp_path / "nope", json=False)
    async with asyncio.timeout(TIMEOUT):
        assert await run_receive(options, open_peer=opener(network), stop=asyncio.Event()) == 2
    assert capsys.readouterr().err == f"peer: {tmp_path / 'nope'}: not a writable directory\n"


async def test_the_terminal_shows_a_progress_bar_and_status_lines(
    dirs: tuple[Path, Path], log: EventLog, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox, inbox = dirs
    path = make(outbox, "pic.png", 400_000)
    network = Network()
    async with receiver(network, inbox, log):
        options = SendOptions(
            peer=settings("alice"), to="bob", files=(path,), json=False, progress_bar=True
        )
        async with asyncio.timeout(TIMEOUT):
            assert await run_send(options, open_peer=opener(network)) == 0
    err = capsys.readouterr().err
    assert "\rpic.png    0% [" in err and "100% [####################] 390.6 KiB / 390.6 KiB" in err
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]  # what stays on screen
    assert lines[0].startswith("online as alice (") and lines[1].startswith("connected to bob")
    assert lines[2].startswith("sent pic.png to bob: 390.6 KiB in ")
    assert lines[2].endswith("saved as pic.png") and lines[3:] == [""]


async def test_an_unknown_receiver_is_one_error(dirs: tuple[Path, Path], log: EventLog) -> None:
    outbox, _ = dirs
    path = make(outbox, "a", 1)
    log.install()
    assert await send(Network(), [path]) == 1
    (error,) = log.events("error")
    assert error["reason"] == "bob is unknown or offline"


def test_send_and_receive_over_loopback(tmp_path: Path) -> None:
    """The real thing: ``peer receive`` and ``peer send`` as processes, the real stream API,
    a rendezvous on loopback."""
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir()
    inbox.mkdir()
    files = [make(outbox, "big.bin", 3_000_000), make(outbox, "small.txt", 6)]
    (inbox / "small.txt").write_bytes(b"the old one")
    port = free_port_pair()
    server = f"127.0.0.1:{port}"
    receive = ["receive", "--dir", str(inbox), "--json", "--no-probe"]
    send = ["send", *map(str, files), "--to", "bob", "--json", "--no-probe"]
    with rendezvous_process(["--listen", server]), (tmp_path / "bob.log").open("wb") as log:
        bob = subprocess.Popen(
            [sys.executable, "-m", "peer", *receive, *chat_args(server, tmp_path, "bob")],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            wait_for_line(bob, lambda line: '"online"' in line, 20, stream="stdout")
            alice = subprocess.run(
                [sys.executable, "-m", "peer", *send, *chat_args(server, tmp_path, "alice")],
                capture_output=True,
                timeout=60,
            )
            assert alice.returncode == 0, alice.stderr.decode()[-2000:]
            sent = [json.loads(line) for line in alice.stdout.decode().splitlines()]
            saved = [event["saved_as"] for event in sent if event["event"] == "file-done"]
            assert saved == ["big.bin", "small (1).txt"]
            assert (inbox / "big.bin").read_bytes() == files[0].read_bytes()
            assert (inbox / "small (1).txt").read_bytes() == files[1].read_bytes()
            assert (inbox / "small.txt").read_bytes() == b"the old one"
            assert leftovers(inbox) == []
            bob.terminate()  # SIGTERM: a receiver's normal end
            assert bob.wait(timeout=20) == 0
        finally:
            if bob.poll() is None:
                bob.kill()
                bob.wait(timeout=10)
            assert bob.stdout is not None
            bob.stdout.close()
