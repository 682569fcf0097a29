"""One side of a connect-time run with aioice (ICE, RFC 8445), inside a lab host's namespace.

Driven by bench/connect_time.py over stdin/stdout JSON lines (stdout carries nothing else):

  1. gathers host and server-reflexive candidates (STUN server: our rendezvous, which
     answers Binding requests) and prints {"event": "gathered", "ufrag", "pwd",
     "candidates", "gather_ms"};
  2. reads the other side's {"ufrag", "pwd", "candidates"} from stdin (the orchestrator
     plays the signalling channel), adds them plus end-of-candidates, prints
     {"event": "armed"};
  3. on the line "go", stamps, prints {"event": "connecting"} and calls
     ``Connection.connect()``. The orchestrator decides the order of the two sides' "go"
     (see --aioice-order in connect_time.py);
  4. initiator: sends one message as soon as ``connect()`` returns; responder: stamps the
     first message's arrival on the socket and its delivery by ``recv()`` (which aioice
     allows only once the responder's own ``connect()`` has returned).

Gathering and signalling happen before the initiator's stamp, so the figure this side
gives is the connectivity-check phase only. Stamps are ``time.monotonic()``, one clock for
all namespaces of the machine. Every wait has a deadline; on failure it prints
{"event": "error"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import aioice

MESSAGE = b"first message"
step = "start"  # the phase under way, named in an error report


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        line = await reader.readline()
    if not line:
        raise ConnectionError("stdin closed early")
    return line.strip()


async def run(args: argparse.Namespace) -> int:
    reader = await stdin_reader()
    initiator = args.role == "initiator"
    conn = aioice.Connection(
        ice_controlling=initiator, stun_server=(args.server, args.port), use_ipv6=False
    )
    arrivals: list[float] = []
    original = conn.data_received

    def data_received(data: bytes, component: int) -> None:
        # The moment the message reaches the ICE agent, before recv() may hand it over.
        arrivals.append(time.monotonic())
        original(data, component)

    conn.data_received = data_received  # type: ignore[method-assign]
    try:
        global step
        step = "gathering"
        started = time.monotonic()
        async with asyncio.timeout(args.timeout):
            await conn.gather_candidates()
        emit(
            "gathered",
            ufrag=conn.local_username,
            pwd=conn.local_password,
            candidates=[c.to_sdp() for c in conn.local_candidates],
            gather_ms=round((time.monotonic() - started) * 1000, 2),
        )
        step = "waiting for the remote description"
        remote = json.loads(await read_line(reader, args.timeout))
        conn.remote_username, conn.remote_password = remote["ufrag"], remote["pwd"]
        for sdp in remote["candidates"]:
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
        await conn.add_remote_candidate(None)
        emit("armed")
        step = "waiting for go"
        if await read_line(reader, args.timeout) != b"go":
            raise ConnectionError("expected 'go' on stdin")
        connect_called = time.monotonic()
        emit("connecting")  # lets the orchestrator start the other side after this one
        step = "connect()"
        async with asyncio.timeout(args.timeout):
            await conn.connect()
        connected = time.monotonic()
        pair = conn._nominated.get(1)  # aioice has no public accessor for the chosen pair
        chosen = f"{pair.local_candidate.type}->{pair.remote_candidate.type}" if pair else "?"
        if initiator:
            await conn.send(MESSAGE)
            emit(
                "result",
                connect_called=connect_called,
                connected=connected,
                sent=time.monotonic(),
                pair=chosen,
            )
        else:
            step = "recv()"
            async with asyncio.timeout(args.timeout):
                data = await conn.recv()
            emit(
                "result",
                connect_called=connect_called,
                connected=connected,
                first_arrival=arrivals[0] if arrivals else None,
                first_message=time.monotonic(),
                intact=data == MESSAGE,
                pair=chosen,
            )
        # Stay up until the orchestrator has both results: closing early would stop our
        # answers to the other side's remaining checks.
        async with asyncio.timeout(args.timeout):
            while await reader.readline():
                pass
    finally:
        await conn.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("initiator", "responder"), required=True)
    parser.add_argument("--server", default="203.0.113.10")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--timeout", type=float, default=15.0, help="deadline of each wait")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return asyncio.run(run(args))
    except (ConnectionError, TimeoutError, OSError, ValueError, KeyError) as exc:
        emit("error", step=step, reason=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
