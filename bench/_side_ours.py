"""One side of a connect-time run with our peer library, inside a lab host's namespace.

Driven by bench/connect_time.py over stdin/stdout JSON lines (stdout carries nothing else;
logs go to stderr):

  responder: logs in, prints {"event": "ready"}, accepts one connection, stamps the first
             message, prints {"event": "result", ...}.
  initiator: logs in, prints {"event": "ready"}, waits for the line "go" on stdin, stamps
             right before ``Peer.connect``, sends one message as soon as it returns, waits
             for the acknowledgement, prints {"event": "result", ...}.

Both then stay up (so that late acknowledgements still have a socket to land on) until
stdin closes. Stamps are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every
network namespace of the machine, so the orchestrator can subtract one side's stamps from
the other's. Every wait has a deadline; on failure the side prints {"event": "error"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iokit.cli_logging import configure_logging
from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.identity import load_or_create

MESSAGE = b"first message"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def wait_for_eof(reader: asyncio.StreamReader, timeout: float) -> None:
    # The orchestrator closes our stdin once it has both sides' results.
    async with asyncio.timeout(timeout):
        while await reader.readline():
            pass


async def run(args: argparse.Namespace) -> int:
    reader = await stdin_reader()
    # A key file per side that outlives the run: later runs log in again under the same
    # name with the same key, which the server must accept (the first key owns the name).
    identity = load_or_create(Path(args.identity))
    config = PeerConfig(probe_nat=False, login_timeout=args.timeout)
    started = time.monotonic()
    async with Peer(
        (args.server, args.port), identity=identity, name=args.name, config=config
    ) as me:
        emit("ready", login_ms=round((time.monotonic() - started) * 1000, 2))
        if args.role == "responder":
            async with asyncio.timeout(args.timeout):
                conn = await me.accept()
                accepted = time.monotonic()
                data: bytes | None = None
                async for data in conn:  # noqa: B007 (the first message is all we want)
                    break
                if data is None:
                    raise PeerError(f"connection closed before any message: {conn.closed}")
                first = time.monotonic()
            emit(
                "result",
                accepted=accepted,
                first_message=first,
                intact=data == MESSAGE,
                path=str(conn.path),
                agent_connect_ms=round(conn.connect_time * 1000, 2),
            )
        else:
            async with asyncio.timeout(args.timeout):
                line = await reader.readline()
            if line.strip() != b"go":
                raise PeerError(f"expected 'go' on stdin, got {line!r}")
            connect_called = time.monotonic()
            conn = await me.connect(args.peer, timeout=args.timeout)
            connected = time.monotonic()
            await conn.send(MESSAGE)
            sent = time.monotonic()
            await conn.drain(timeout=args.timeout)
            emit(
                "result",
                connect_called=connect_called,
                connected=connected,
                sent=sent,
                acked=time.monotonic(),
                path=str(conn.path),
                remote=f"{conn.remote[0]}:{conn.remote[1]}",
                agent_connect_ms=round(conn.connect_time * 1000, 2),
            )
        await wait_for_eof(reader, args.timeout)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("initiator", "responder"), required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--peer", help="initiator: whom to connect to")
    parser.add_argument("--identity", required=True, help="key file, created if missing")
    parser.add_argument("--server", default="203.0.113.10")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--timeout", type=float, default=15.0, help="deadline of each wait")
    args = parser.parse_args()
    configure_logging(json=True)
    try:
        return asyncio.run(run(args))
    except (PeerError, TimeoutError, OSError) as exc:
        emit("error", reason=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
