"""One side of a bulk transfer through the peer library, run inside a lab host's
namespace (``python -m natlab.bulk``); the lab's tests and bench/bulk.py drive it.

  receiver: logs in, prints {"event": "ready"}, accepts one connection and one stream,
            hashes everything until the end of the stream, answers with the SHA-256,
            prints {"event": "result", ...}.
  sender:   logs in, prints {"event": "ready"}, connects, writes ``--mb`` megabytes (a
            seeded pattern, so nothing is held in memory) with backpressure, ends the
            stream, reads the receiver's SHA-256, prints {"event": "result", ...} with
            whether it matches, the seconds and the CPU-seconds the transfer took.

With ``--messages N`` both sides use messages instead (``conn.send`` / ``async for``): N
messages of 1,000 B numbered 0..N-1, then one message of ``--mb`` megabytes; the receiver
checks that each arrives exactly once and in order, answers with the big one's SHA-256 and
prints {"event": "result", "in_order": ...}.

``--role tcp-receiver`` / ``tcp-sender`` move the same bytes over one plain TCP connection
(``--port``: where the receiver listens), the lab's ceiling for the figures above.

stdout carries only these JSON lines (logs go to stderr). Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

from iokit.cli_logging import configure_logging
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.identity import load_or_create
from peer.session_config import SessionConfig
from peer.transport.config import TransportConfig

BLOCK = 1024 * 1024


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


async def receive(me: Peer, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        conn = await me.accept()
        stream = await conn.accept_stream()
    started, cpu = time.monotonic(), time.process_time()
    digest = hashlib.sha256()
    total = 0
    while chunk := await asyncio.wait_for(stream.read(BLOCK), timeout):
        digest.update(chunk)
        total += len(chunk)
    elapsed, used = time.monotonic() - started, time.process_time() - cpu
    emit("result", bytes=total, seconds=elapsed, cpu=used, path=str(conn.path))
    stream.write(digest.digest())
    # The sender hangs up once it has the answer: its close may overtake our end's
    # acknowledgement, which is no failure.
    with contextlib.suppress(PeerError):
        await asyncio.wait_for(stream.close(), timeout)


async def send(me: Peer, peer: str, megabytes: int, seed: int, timeout: float) -> None:
    conn = await me.connect(peer, timeout=timeout)
    stream = await conn.open_stream()
    block = pattern(seed)
    expected = hashlib.sha256()
    started, cpu = time.monotonic(), time.process_time()
    for _ in range(megabytes):
        stream.write(block)
        expected.update(block)
        await asyncio.wait_for(stream.drain(), timeout)
    stream.write_eof()
    answer = await asyncio.wait_for(stream.readexactly(32), timeout)
    elapsed, used = time.monotonic() - started, time.process_time() - cpu
    emit(
        "result",
        bytes=megabytes * BLOCK,
        seconds=elapsed,
        cpu=used,
        intact=answer == expected.digest(),
        path=str(conn.path),
    )
    await asyncio.wait_for(stream.close(), timeout)
    await asyncio.wait_for(stream.read(), timeout)  # the receiver's end: it is done too


MESSAGE = 1000


async def receive_messages(me: Peer, count: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        conn = await me.accept()
    started, cpu = time.monotonic(), time.process_time()
    messages = aiter(conn)
    in_order = True
    for number in range(count):
        message = await asyncio.wait_for(anext(messages), timeout)
        in_order = in_order and message[:4] == number.to_bytes(4, "big")
        in_order = in_order and len(message) == MESSAGE
    big = await asyncio.wait_for(anext(messages), timeout)
    elapsed, used = time.monotonic() - started, time.process_time() - cpu
    emit(
        "result",
        messages=count,
        in_order=in_order,
        bytes=len(big),
        seconds=elapsed,
        cpu=used,
        path=str(conn.path),
    )
    await conn.send(hashlib.sha256(big).digest())
    await conn.drain(timeout)
    # The sender hangs up once it has the answer; that is the end.
    with contextlib.suppress(StopAsyncIteration, PeerError):
        await asyncio.wait_for(anext(messages), timeout)


async def send_messages(me: Peer, peer: str, count: int, megabytes: int, timeout: float) -> None:
    conn = await me.connect(peer, timeout=timeout)
    padding = bytes(MESSAGE - 4)
    big = pattern(1) * megabytes
    started, cpu = time.monotonic(), time.process_time()
    for number in range(count):
        await asyncio.wait_for(conn.send(number.to_bytes(4, "big") + padding), timeout)
    await asyncio.wait_for(conn.send(big), timeout)
    answer = await asyncio.wait_for(anext(aiter(conn)), timeout)
    elapsed, used = time.monotonic() - started, time.process_time() - cpu
    emit(
        "result",
        messages=count,
        bytes=len(big),
        seconds=elapsed,
        cpu=used,
        intact=answer == hashlib.sha256(big).digest(),
        path=str(conn.path),
    )
    await asyncio.wait_for(conn.close(), timeout)


def tcp_receive(port: int, timeout: float) -> None:
    """The lab's ceiling: the same bytes over one plain TCP connection."""
    with socket.create_server(("0.0.0.0", port)) as server:
        server.settimeout(timeout)
        emit("ready")
        conn, _ = server.accept()
    with conn:
        conn.settimeout(timeout)
        started, cpu = time.monotonic(), time.process_time()
        digest, total = hashlib.sha256(), 0
        while chunk := conn.recv(BLOCK):
            digest.update(chunk)
            total += len(chunk)
        elapsed, used = time.monotonic() - started, time.process_time() - cpu
        emit("result", bytes=total, seconds=elapsed, cpu=used, path="tcp")
        conn.sendall(digest.digest())


def tcp_send(server: str, port: int, megabytes: int, seed: int, timeout: float) -> None:
    block = pattern(seed)
    expected = hashlib.sha256()
    with socket.create_connection((server, port), timeout=timeout) as conn:
        emit("ready")
        started, cpu = time.monotonic(), time.process_time()
        for _ in range(megabytes):
            conn.sendall(block)
            expected.update(block)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 32 and (chunk := conn.recv(32 - len(answer))):
            answer += chunk
        elapsed, used = time.monotonic() - started, time.process_time() - cpu
    emit(
        "result",
        bytes=megabytes * BLOCK,
        seconds=elapsed,
        cpu=used,
        intact=answer == expected.digest(),
        path="tcp",
    )


async def run(args: argparse.Namespace) -> int:
    identity = load_or_create(Path(args.identity))
    # Room for the one big message (--messages) beside everything else.
    transport = TransportConfig(max_message_size=max(16, args.mb + 1) * BLOCK)
    config = PeerConfig(
        probe_nat=False,
        login_timeout=args.timeout,
        session=SessionConfig(transport=transport),
    )
    async with Peer(
        (args.server, args.port), identity=identity, name=args.name, config=config
    ) as me:
        emit("ready")
        if args.role == "receiver" and args.messages:
            await receive_messages(me, args.messages, args.timeout)
        elif args.role == "receiver":
            await receive(me, args.timeout)
        elif args.messages:
            await send_messages(me, args.peer, args.messages, args.mb, args.timeout)
        else:
            await send(me, args.peer, args.mb, args.seed, args.timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = ("receiver", "sender", "tcp-receiver", "tcp-sender")
    parser.add_argument("--role", choices=roles, required=True)
    parser.add_argument("--name", default="bulk")
    parser.add_argument("--peer", help="sender: whom to send to")
    parser.add_argument("--identity", help="key file, created if missing (peer roles)")
    parser.add_argument("--server", default="203.0.113.10")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--mb", type=int, default=256, help="sender: megabytes to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--messages", type=int, default=0, help="send N numbered messages, then one of --mb"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each wait")
    args = parser.parse_args(argv)
    if args.role in ("receiver", "sender") and args.identity is None:
        parser.error(f"--role {args.role} needs --identity")
    configure_logging(json=True)
    try:
        if args.role == "tcp-receiver":
            tcp_receive(args.port, args.timeout)
            return 0
        if args.role == "tcp-sender":
            tcp_send(args.server, args.port, args.mb, args.seed, args.timeout)
            return 0
        return asyncio.run(run(args))
    except (PeerError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        emit("error", reason=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
