"""One side of a bulk transfer through the peer library, run inside a lab host's
namespace (``python -m natlab.bulk``); the lab's tests and bench/bulk.py drive it.

  receiver: logs in, prints {"event": "ready"}, accepts one connection and one stream,
            hashes everything until the end of the stream, answers with the SHA-256,
            prints {"event": "result", ...}.
  sender:   logs in, prints {"event": "ready"}, connects, writes ``--mb`` megabytes (a
            seeded pattern, so nothing is held in memory) with backpressure, ends the
            stream, reads the receiver's SHA-256, prints {"event": "result", ...} with
            whether it matches, the seconds and the CPU-seconds the transfer took.

stdout carries only these JSON lines (logs go to stderr). Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from iokit.cli_logging import configure_logging
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.identity import load_or_create

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


async def run(args: argparse.Namespace) -> int:
    identity = load_or_create(Path(args.identity))
    config = PeerConfig(probe_nat=False, login_timeout=args.timeout)
    async with Peer(
        (args.server, args.port), identity=identity, name=args.name, config=config
    ) as me:
        emit("ready")
        if args.role == "receiver":
            await receive(me, args.timeout)
        else:
            await send(me, args.peer, args.mb, args.seed, args.timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("receiver", "sender"), required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--peer", help="sender: whom to send to")
    parser.add_argument("--identity", required=True, help="key file, created if missing")
    parser.add_argument("--server", default="203.0.113.10")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--mb", type=int, default=256, help="sender: megabytes to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each wait")
    args = parser.parse_args(argv)
    configure_logging(json=True)
    try:
        return asyncio.run(run(args))
    except (PeerError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        emit("error", reason=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
